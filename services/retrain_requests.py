"""Retrain requests: the unit of retraining work, and what makes a retrain exactly-once.

Every retrain message names a request, and a run starts only from a 'pending' request, which it
turns 'processing'; so a duplicate message (a re-send, a broker re-delivery) finds the request taken
or done and exits. At most one pending request per model (a partial unique index) is the debounce:
the first trigger of a window opens it and is told to enqueue one retrain with a countdown of the
window; later triggers join it. A trigger arriving while a run works opens exactly one follow-up.

A request whose run died goes back to 'pending' (the reconciler re-sends it) until
`recovery.max_lost_runs` runs have died on it; then it fails with the reason, so a retrain that kills its worker every time
does not loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import Priority, RequestStatus, RetrainRequest, TrainingRun, Trigger
from retrainer.services import audit, controls
from retrainer.services.controls import Suppressed
from retrainer.services.errors import NotFound, RequestConflict


@dataclass(frozen=True)
class Enqueue:
    """A retrain the caller must enqueue after its transaction commits."""

    model: str
    request_id: int
    countdown: float
    priority: Priority = Priority.NORMAL  # a person's high request jumps the training queue


def coalesce(session: Session, settings: Settings, model: str, count: int = 1, trigger: Trigger = Trigger.EVENT,
             requested_by: str = "events", window: float | None = None, *, fine_tune: bool = False,
             drift_report_id: int | None = None, train_since: datetime | None = None) -> Enqueue | Suppressed | None:
    """Join the model's pending request, or open one; returns what to enqueue, or None when the
    pending request's own message will do. `window` defaults to the model's debounce window
    (events); a check or a person passes 0 (run now), which also pulls a waiting request forward.
    A fine-tune is asked for only while every trigger that joined wants one (a full retrain covers it);
    a window from `train_since` only while every trigger that joined names one (the latest wins).
    A paused model or a spent budget returns Suppressed, recorded with its reason (services/controls.py)."""
    cfg = settings.model(model)
    if (why := controls.suppression(session, model, trigger, cfg.budget)) is not None:
        return controls.record_suppressed(session, model, trigger, requested_by, why, count)
    window = cfg.debounce_seconds if window is None else window
    request, created = _open(session, model, count, trigger, requested_by, window)
    if created:
        request.fine_tune, request.drift_report_id, request.train_since = fine_tune, drift_report_id, train_since
    else:
        request.fine_tune = request.fine_tune and fine_tune
        request.drift_report_id = request.drift_report_id or drift_report_id
        request.train_since = max(request.train_since, train_since) if request.train_since and train_since else None
    if created:
        return Enqueue(model, request.id, window)
    due = clock.now() + timedelta(seconds=window)
    if request.not_before > due:  # asked for sooner than the window it joined: run it sooner
        request.not_before = due
        return Enqueue(model, request.id, window)
    return None


def for_check(session: Session, settings: Settings, model: str, trigger: Trigger, requested_by: str,
              result: dict[str, Any]) -> Enqueue | Suppressed | None:
    """A check's retrain_needed as the model's request, to run now with what the check found: a
    fine-tune, the drift report that asked, the moment to train from (`train_since`, ISO text)."""
    since = result.get("train_since")
    return coalesce(session, settings, model, trigger=trigger, requested_by=requested_by, window=0,
                    fine_tune=result.get("fine_tune", False), drift_report_id=result.get("drift_report_id"),
                    train_since=datetime.fromisoformat(since) if since else None)


def open_now(session: Session, model: str, trigger: Trigger, requested_by: str) -> RetrainRequest:
    """The model's pending request, opened or joined, for a caller that runs it itself right now."""
    request, _ = _open(session, model, 1, trigger, requested_by, 0)
    request.not_before = min(request.not_before, clock.now())
    return request


def ask(session: Session, model: str, requested_by: str, reason: str | None = None,
        priority: Priority = Priority.NORMAL) -> RetrainRequest:
    """A person's request (seed 003's manual request): runs now, whatever pause or budget say. One
    waiting request per model: a pending one is taken over (it becomes this person's, with the higher
    of the two priorities), so one run serves both."""
    request, created = _open(session, model, 1, Trigger.MANUAL, requested_by, 0)
    request.not_before = min(request.not_before, clock.now())
    before = None if created else f"{request.trigger.value} request by {request.requested_by}"
    request.trigger, request.requested_by = Trigger.MANUAL, requested_by
    request.reason = reason or (f"asked by {requested_by}" if created else f"asked by {requested_by}; joined {before}")
    request.priority = max(request.priority, priority, key=PRIORITY_ORDER.index) if not created else priority
    request.fine_tune = False  # a person asks for a full retrain
    if not created:
        audit.record(session, "trigger", f"{model}: request {request.id} ({before}) taken over by {requested_by}",
                     model=model, request_id=request.id, priority=request.priority.value)
    return request


PRIORITY_ORDER = [Priority.LOW, Priority.NORMAL, Priority.HIGH]


def listing(session: Session, model: str | None = None, status: RequestStatus | None = None,
            limit: int = 50) -> list[dict[str, Any]]:
    """Requests newest first, with the run each led to (seed 003's model_retraining_requests)."""
    stmt = sa.select(RetrainRequest, TrainingRun.outcome).outerjoin(
        TrainingRun, TrainingRun.run_id == RetrainRequest.run_id)
    if model is not None:
        stmt = stmt.where(RetrainRequest.model == model)
    if status is not None:
        stmt = stmt.where(RetrainRequest.status == status)
    rows = session.execute(stmt.order_by(RetrainRequest.id.desc()).limit(limit)).all()
    return [describe(r, outcome) for r, outcome in rows]


def describe(r: RetrainRequest, outcome: str | None = None) -> dict[str, Any]:
    """A request as `retrainer requests --json` shows it."""
    def at(t: Any) -> str | None:
        return t.isoformat() if t else None

    return {"id": r.id, "model": r.model, "trigger": r.trigger.value, "requested_by": r.requested_by,
            "reason": r.reason, "priority": r.priority.value, "status": r.status.value, "fine_tune": r.fine_tune,
            "event_count": r.event_count, "created_at": at(r.created_at), "not_before": at(r.not_before),
            "processed_at": at(r.started_at), "completed_at": at(r.completed_at), "run_id": r.run_id,
            "run_outcome": outcome, "drift_report_id": r.drift_report_id, "error_message": r.error_message}


def cancel(session: Session, request_id: int, by: str) -> dict[str, Any]:
    """Cancel a pending request (its message, when it arrives, finds it cancelled and exits). A request a
    run is processing, or one already ended, cannot be cancelled: NotFound / RequestConflict say why."""
    request = session.get(RetrainRequest, request_id, with_for_update=True)
    if request is None:
        raise NotFound(f"no retrain request {request_id}")
    if request.status != RequestStatus.PENDING:
        run = f" by run {request.run_id}" if request.run_id else ""
        raise RequestConflict(f"request {request_id} is {request.status.value}{run}: only a pending request can be "
                              "cancelled")
    request.status, request.completed_at = RequestStatus.CANCELLED, clock.now()
    request.error_message = f"cancelled by {by}"
    audit.record(session, "request_cancelled", f"{request.model}: request {request_id} cancelled by {by}",
                 model=request.model, request_id=request_id, by=by)
    return describe(request, None)


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
    return Enqueue(model, request.id, max(0.0, (request.not_before - clock.now()).total_seconds()), request.priority)


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
    if request is None or request.status != RequestStatus.PROCESSING or request.run_id != run_id:
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
