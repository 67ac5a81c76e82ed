"""How work gets onto the queues: enqueue helpers and the producers' batch path.

`publish_events([...])` stores many events in one transaction (one multi-row INSERT) and enqueues
at most one retrain per model per debounce window — instead of one Celery message per event, which
tops out near a thousand messages a second per producer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from retrainer.config import Settings, get_settings
from retrainer.db import session_scope
from services import events
from services.errors import InvalidEvent
from tasks.app import app


def send_retrain(model: str, trigger: str = "manual", request_id: int | None = None, countdown: float = 0,
                 settings: Settings | None = None, via: Celery | None = None) -> AsyncResult:
    settings = settings or get_settings()
    limit = settings.model(model).training.time_limit_seconds
    return (via or app).send_task(
        "training.retrain_model", kwargs={"model": model, "trigger": trigger, "request_id": request_id},
        queue="training", countdown=countdown or None, soft_time_limit=limit, time_limit=limit + 60,
    )


def send_jobs(jobs: Iterable[events.Enqueue], trigger: str = "event", settings: Settings | None = None,
              via: Celery | None = None) -> list[str]:
    """Enqueue coalesced retrains; call only after the transaction that created them committed."""
    return [send_retrain(j.model, trigger, j.request_id, j.countdown, settings, via).id for j in jobs]


def send_event(payload: dict[str, Any], via: Celery | None = None) -> AsyncResult:
    """The per-event path: one Celery message. An event id is set here so a re-delivery is a no-op."""
    if isinstance(payload, dict) and not payload.get("event_id"):
        payload = {**payload, "event_id": uuid.uuid4().hex}
    return (via or app).send_task("events.ingest_event", args=[payload], queue="events")


@dataclass
class Published:
    stored: int = 0
    duplicates: int = 0
    retrains_enqueued: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"stored": self.stored, "duplicates": self.duplicates,
                "retrains_enqueued": self.retrains_enqueued, "rejected": self.rejected}


def publish_events(raw_events: Iterable[Any], settings: Settings | None = None, chunk: int = 5000,
                   via: Celery | None = None) -> Published:
    """The batch path. Invalid events are reported back (index and reason) and the rest are stored."""
    settings = settings or get_settings()
    out = Published()
    batch: list[events.PurchaseEvent | events.OutcomeEvent] = []
    positions: list[int] = []  # each batched event's index in raw_events, to report a rejection by it

    def flush() -> None:
        if not batch:
            return
        with session_scope(settings.database_url) as session:
            stored = events.store(session, settings, batch, source="batch")
        out.stored += stored.stored
        out.rejected += [{"index": positions[i], "error": error} for i, error in stored.rejected or []]
        out.duplicates += stored.duplicates
        out.retrains_enqueued += len(send_jobs(stored.enqueue or [], settings=settings, via=via))
        batch.clear()
        positions.clear()

    for i, raw in enumerate(raw_events):
        try:
            event = events.parse(raw)
            if isinstance(event, events.PurchaseEvent):
                settings.model(event.model)
        except (InvalidEvent, LookupError) as exc:
            out.rejected.append({"index": i, "error": str(exc)})
            continue
        batch.append(event)
        positions.append(i)
        if len(batch) >= chunk:
            flush()
    flush()
    out.rejected.sort(key=lambda r: r["index"])
    return out
