"""The producers' client: one event per Celery message (`send_event`, or `send_events` for many at hand,
pipelined), or many per database round trip (the batch path).

`publish_events([...])` stores many events in one transaction (one multi-row INSERT) and enqueues
at most one retrain per model per debounce window, and returns once they are stored. The per-event
path is asynchronous: one message per event, which a worker stores in batches (tasks/events.py);
`send_event` publishes about 2,000 a second from one thread here, `send_events` several times that.
`send_admitted` (POST /events) sends what `send_events` sends, reporting each refused event instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from celery import Celery

from retrainer.config import Settings, get_settings
from retrainer.db import session_scope
from retrainer.services import events
from retrainer.services.errors import InvalidEvent
from retrainer.tasks import inbox
from retrainer.tasks.app import app
from retrainer.tasks.enqueue import send_jobs


class Sent(NamedTuple):
    event_id: str
    task_id: str  # the Celery message's id: worker logs name the task by it


def send_event(payload: Any, via: Celery | None = None) -> Sent:
    """The per-event path: one Celery message. The event is validated here
    (InvalidEvent, and nothing sent, when it is bad) and travels as one JSON string with an event id (a
    re-delivery is a no-op): a worker never has to pickle a nested object to hand it to its pool. On
    Redis its receipt is written with it (tasks/inbox.py), so a message lost to a restart is re-sent.
    Published lean: no result, no task-sent event."""
    document = events.document(payload)
    event_id = json.loads(document)["event_id"]
    return Sent(event_id, inbox.send(via or app, document, event_id))


def send_events(payloads: Iterable[Any], via: Celery | None = None) -> list[Sent]:
    """The per-event path for many events at hand: one Celery message each, exactly what send_event sends
    (each stored, rejected, acknowledged and re-sent on its own), published in pipelined round trips of
    500 messages with their receipts. All are validated first: InvalidEvent naming the first bad one's
    index, and nothing sent. A broker error raises; the round trips before it were sent (re-sending the
    whole list is harmless: event ids make it a no-op)."""
    documents = []
    for i, payload in enumerate(payloads):
        try:
            documents.append(events.document(payload))
        except InvalidEvent as exc:
            raise InvalidEvent(f"event {i}: {exc}") from None
    return _send_documents(documents, via)


def _send_documents(documents: list[str], via: Celery | None) -> list[Sent]:
    sent = [(json.loads(d)["event_id"], d) for d in documents]
    return [Sent(event_id, task_id) for (event_id, _), task_id in zip(sent, inbox.send_many(via or app, sent),
                                                                       strict=True)]


def admit(raw: Any, settings: Settings) -> events.Event:
    """One raw event as both batch paths take it: valid (services.events.parse) and, for a purchase or a
    prediction, of a configured model. InvalidEvent or LookupError (UnknownModel) naming why not."""
    event = events.parse(raw)
    if isinstance(event, events.PurchaseEvent | events.PredictionEvent):
        settings.model(event.model)
    return event


@dataclass
class Accepted:
    sent: list[tuple[int, Sent]] = field(default_factory=list)  # (index in the batch, what was sent)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"index", "error"}, as publish_events reports


def send_admitted(payloads: Iterable[Any], settings: Settings, via: Celery | None = None) -> Accepted:
    """The per-event path for a batch from outside (POST /events): each event admitted as publish_events
    admits it, a refused one reported back by index with its one-line reason, the rest sent exactly as
    send_events sends them (one message each, with its receipt)."""
    out = Accepted()
    documents: list[tuple[int, str]] = []
    for i, payload in enumerate(payloads):
        try:
            document = events.document(payload)
            admit(document, settings)
        except (InvalidEvent, LookupError) as exc:
            out.rejected.append({"index": i, "error": str(exc)})
            continue
        documents.append((i, document))
    sent = _send_documents([d for _, d in documents], via) if documents else []
    out.sent = [(i, s) for (i, _), s in zip(documents, sent, strict=True)]
    return out


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
    batch: list[events.Event] = []
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
            event = admit(raw, settings)
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
