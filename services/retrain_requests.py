"""Retrain requests: the unit of retraining work, and what makes a retrain exactly-once.

Every retrain message names a request, and a run starts only from a 'pending' request, which it
turns 'running'; so a duplicate message (a re-send, a broker re-delivery) finds the request taken
or done and exits. At most one pending request per model (a partial unique index) is the debounce:
the first trigger of a window opens it and is told to enqueue one retrain with a countdown of the
window; later triggers join it. A trigger arriving while a run works opens exactly one follow-up.

A request whose run died goes back to 'pending' (the reconciler re-sends it) until
`recovery.max_lost_runs` runs have died on it; then it fails with the reason, so a retrain that kills its worker every time
does not loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import RequestStatus, RetrainRequest, Trigger
from retrainer.services import audit


@dataclass(frozen=True)
class Enqueue:
    """A retrain the caller must enqueue after its transaction commits."""

    model: str
    request_id: int
    countdown: float


def coalesce(session: Session, settings: Settings, model: str, count: int = 1, trigger: Trigger = Trigger.EVENT,
             requested_by: str = "events", window: float | None = None) -> Enqueue | None:
    """Join the model's pending request, or open one; returns what to enqueue, or None when the
    pending request's own message will do. `window` defaults to the model's debounce window
    (events); a check or a person passes 0 (run now), which also pulls a waiting request forward."""
    window = settings.model(model).debounce_seconds if window is None else window
    request, created = _open(session, model, count, trigger, requested_by, window)
    if created:
        return Enqueue(model, request.id, window)
    due = clock.now() + timedelta(seconds=window)
    if request.not_before > due:  # asked for sooner than the window it joined: run it sooner
        request.not_before = due
        return Enqueue(model, request.id, window)
    return None


def open_now(session: Session, model: str, trigger: Trigger, requested_by: str) -> RetrainRequest:
    """The model's pending request, opened or joined, for a caller that runs it itself right now."""
    request, _ = _open(session, model, 1, trigger, requested_by, 0)
    request.not_before = min(request.not_before, clock.now())
    return request


def _open(session: Session, model: str, count: int, trigger: Trigger, requested_by: str,
          window: float) -> tuple[RetrainRequest, bool]:
    now = clock.now()
    # Most calls join an open request: look for it first (one locking read) rather than paying for a
    # failed INSERT, its savepoint and the IntegrityError on every chunk of an event storm.
    pending = pending_request(session, model)
    if pending is not None:
        pending.event_count += count
        return pending, False
    try:
        with session.begin_nested():
            request = RetrainRequest(
                model=model, trigger=trigger, requested_by=requested_by,
                reason=f"{count} {trigger.value} event(s)", status=RequestStatus.PENDING, event_count=count,
                created_at=now, not_before=now + timedelta(seconds=window),
            )
            session.add(request)
    except IntegrityError:  # another transaction opened it between our read and our insert: join that
        return _open(session, model, count, trigger, requested_by, window)
    audit.record(session, "trigger", f"{model}: retrain requested by {requested_by} ({trigger.value})",
                 model=model, request_id=request.id, countdown=window)
    return request, True


def pending_request(session: Session, model: str) -> RetrainRequest | None:
    """The model's open request, locked (FOR UPDATE) so concurrent joins add up instead of overwriting."""
    return session.scalar(
        sa.select(RetrainRequest)
        .where(RetrainRequest.model == model, RetrainRequest.status == RequestStatus.PENDING)
        .with_for_update()
    )


def next_job(session: Session, model: str) -> Enqueue | None:
    """The follow-up to send when a run of `model` ends: its pending request, at its due time."""
    request = pending_request(session, model)
    if request is None:
        return None
    return Enqueue(model, request.id, max(0.0, (request.not_before - clock.now()).total_seconds()))


def close(session: Session, request_id: int | None, status: RequestStatus, error: str | None = None) -> None:
    if request_id is not None:
        session.execute(
            sa.update(RetrainRequest).where(RetrainRequest.id == request_id)
            .values(status=status, completed_at=clock.now(), error_message=error)
        )


def hand_back(session: Session, request_id: int, run_id: str, why: str, max_lost_runs: int) -> RequestStatus | None:
    """The run working on this request died: make the request pending again (to be re-sent), or
    fail it once `max_lost_runs` runs have died on it. Returns the request's new status."""
    request = session.get(RetrainRequest, request_id, with_for_update=True)
    if request is None or request.status != RequestStatus.RUNNING or request.run_id != run_id:
        return None  # already moved on (a retry of the same task took it over, or it was closed)
    request.lost_runs += 1
    now = clock.now()
    if request.lost_runs >= max_lost_runs:
        request.status, request.completed_at = RequestStatus.FAILED, now
        request.error_message = f"gave up after {request.lost_runs} runs died on it (last: {why})"
    elif (other := pending_request(session, request.model)) is not None:
        # A follow-up is already waiting: it covers this one's work too.
        other.event_count += request.event_count
        request.status, request.completed_at = RequestStatus.CANCELLED, now
        request.error_message = f"its run died ({why}); merged into pending request {other.id}"
    else:
        request.status, request.not_before = RequestStatus.PENDING, now
        request.error_message = f"run {run_id} died ({why}); to be re-sent"
    audit.record(session, "request_returned", f"{request.model}: request {request.id} {request.status.value}: "
                 f"{request.error_message}", model=request.model, request_id=request.id, run_id=run_id)
    return request.status
