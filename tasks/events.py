"""events.* — the per-event path: store one producer event, then coalesce it."""

from __future__ import annotations

import logging
from typing import Any

from retrainer.config import UnknownModel, get_settings
from services import events
from services.errors import InvalidEvent
from tasks.app import app
from tasks.base import RetrainerTask
from tasks.producer import send_jobs

log = logging.getLogger(__name__)


@app.task(
    name="events.ingest_event", base=RetrainerTask, bind=True, ignore_result=True,
    acks_late=True,  # idempotent: the event id is unique, a re-delivery stores nothing twice
    soft_time_limit=30, time_limit=60,
)
def ingest_event(self: RetrainerTask, payload: Any) -> None:
    settings = get_settings()
    try:
        event = events.parse(payload)
        with self.session() as session:
            stored = events.store(session, settings, [event])
        problem = stored.rejected[0][1] if stored.rejected else None
    except (InvalidEvent, UnknownModel) as exc:  # bad input: kept with the reason, never retried
        problem, stored = str(exc), None
    if problem is not None:
        with self.session() as session:
            events.reject(session, payload, problem)
        log.warning("event rejected: %s", problem)
        return
    send_jobs(stored.enqueue or [], settings=settings)
