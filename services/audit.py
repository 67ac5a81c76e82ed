"""The audit log (system_events): one row per trigger, decision, promotion, rollback, notification."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from retrainer.db.records import SystemEvent


def record(session: Session, kind: str, message: str, model: str | None = None, **payload: Any) -> SystemEvent:
    event = SystemEvent(model=model, kind=kind, message=message, payload=payload)
    session.add(event)
    return event
