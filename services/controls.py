"""What a person steers at runtime, and the gate every automatic trigger passes.

Pause and resume are rows in model_controls, so they reach every worker and beat at once, without a
restart (seed 004's start/stop). The budget caps automatic runs per model over a rolling window. A
trigger the gate stops is recorded in system_events (kind `suppressed`) with its reason, never dropped
quietly; a person's request always passes (a paused model still retrains when someone asks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Budget
from retrainer.db.records import (
    ModelControl,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
    Trigger,
)
from retrainer.services import audit

# An event storm against a paused model would write one row per chunk or message: within this many
# seconds the latest suppression row of the same trigger and reason counts the repeats instead.
REPEAT_SECONDS = 300


@dataclass(frozen=True)
class Suppressed:
    """A trigger the gate stopped: nothing to enqueue, and why."""

    model: str
    reason: str


def state(session: Session, model: str) -> dict[str, Any]:
    """paused (bool) and who changed it when and why; a model never paused is active."""
    row = session.get(ModelControl, model)
    if row is None:
        return {"paused": False, "changed_at": None, "changed_by": None, "reason": None}
    return {"paused": row.paused, "changed_at": row.changed_at.isoformat(), "changed_by": row.changed_by,
            "reason": row.reason}


def set_paused(session: Session, model: str, paused: bool, by: str, reason: str | None = None) -> dict[str, Any]:
    """Pause or resume MODEL. Pausing cancels its waiting automatic requests (a person's stay). Idempotent."""
    row = session.get(ModelControl, model, with_for_update=True)
    if row is None:
        row = ModelControl(model=model, paused=paused, changed_by=by, reason=reason)
        session.add(row)
    else:
        row.paused, row.changed_by, row.reason, row.changed_at = paused, by, reason, clock.now()
    cancelled: list[int] = []
    if paused:
        cancelled = list(session.scalars(
            sa.update(RetrainRequest)
            .where(RetrainRequest.model == model, RetrainRequest.status == RequestStatus.PENDING,
                   RetrainRequest.trigger != Trigger.MANUAL)
            .values(status=RequestStatus.CANCELLED, completed_at=clock.now(), error_message=f"model paused by {by}")
            .returning(RetrainRequest.id)
        ))
    word = "paused" if paused else "resumed"
    why = f": {reason}" if reason else ""
    audit.record(session, "control", f"{model}: {word} by {by}{why}", model=model, paused=paused, by=by,
                 reason=reason, cancelled_requests=cancelled)
    return state(session, model) | {"model": model, "cancelled_requests": cancelled}


def automatic_runs(session: Session, model: str, hours: float) -> int:
    """Runs of MODEL that a trigger other than a person started in the last `hours` (skipped ones did
    no work and do not count)."""
    since = clock.now() - timedelta(hours=hours)
    return session.scalar(
        sa.select(sa.func.count()).select_from(TrainingRun)
        .where(TrainingRun.model == model, TrainingRun.trigger != Trigger.MANUAL,
               TrainingRun.status != RunStatus.SKIPPED, TrainingRun.started_at >= since)
    ) or 0


def suppression(session: Session, model: str, trigger: Trigger, budget: Budget) -> str | None:
    """Why an automatic trigger of MODEL must not open a retrain now, or None. A person's never is."""
    if trigger == Trigger.MANUAL:
        return None
    row = session.get(ModelControl, model)
    if row is not None and row.paused:
        why = f" ({row.reason})" if row.reason else ""
        return f"model paused by {row.changed_by} at {row.changed_at:%Y-%m-%d %H:%M} UTC{why}"
    if budget.max_runs is not None:
        used = automatic_runs(session, model, budget.per_hours)
        if used >= budget.max_runs:
            return (f"retrain budget spent: {used} automatic runs in the last {budget.per_hours:g} h "
                    f"(budget.max_runs {budget.max_runs})")
    return None


def record_suppressed(session: Session, model: str, trigger: Trigger, requested_by: str, reason: str,
                      count: int = 1) -> Suppressed:
    """The suppression in system_events; a repeat within REPEAT_SECONDS adds to the latest row's count."""
    since = clock.now() - timedelta(seconds=REPEAT_SECONDS)
    latest = session.scalar(
        sa.select(SystemEvent)
        .where(SystemEvent.model == model, SystemEvent.kind == "suppressed", SystemEvent.created_at >= since)
        .order_by(SystemEvent.id.desc()).limit(1).with_for_update()
    )
    payload = latest.payload if latest is not None else {}
    if latest is not None and payload.get("trigger") == trigger.value and payload.get("reason") == reason:
        latest.payload = payload | {"repeats": payload.get("repeats", 1) + count}  # a new dict: JSON change seen
    else:
        audit.record(session, "suppressed", f"{model}: {trigger.value} trigger ({requested_by}) suppressed: {reason}",
                     model=model, trigger=trigger.value, requested_by=requested_by, reason=reason, repeats=count)
    return Suppressed(model, reason)
