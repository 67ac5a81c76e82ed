"""The per-model run lock: one 'running' training_runs row per model (a partial unique index).

The lock is held by a short lease that a heartbeat thread renews while the run is alive, so a run
whose worker was killed frees its model within one lease (30 s), not after the whole time limit.
Whoever finds an expired lease — the next retrain of the model or the reconciler — marks that run
failed and hands its request back to be re-sent. Every write of a run's result is fenced by its id
and status: a run that lost its lock cannot overwrite what its successor wrote.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Recovery
from retrainer.db.records import RequestStatus, RetrainRequest, RunStatus, TrainingRun, Trigger
from retrainer.services import audit, retrain_requests

log = logging.getLogger(__name__)

DEFAULTS = Recovery()


class LostLock(RuntimeError):
    """Our run's lease expired and another run took the lock: this run must not write its result."""


@dataclass(frozen=True)
class Claim:
    run_id: str | None
    request_id: int | None
    skipped: dict[str, Any] | None = None
    fine_tune: bool = False  # the request asks to continue from the production version
    train_since: datetime | None = None  # the request asks to train on rows from then on


def new_run_id() -> str:
    return f"run_{clock.now():%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def claim(session: Session, model: str, trigger: Trigger, request_id: int | None, task_id: str | None,
          attempt: int = 0, recovery: Recovery = DEFAULTS) -> Claim:
    """Start a run for the request (a message without one opens or joins the model's pending
    request), or say why not. Commits."""
    now = clock.now()
    expire_dead(session, recovery, model)
    if request_id is None:
        request = retrain_requests.open_now(session, model, trigger, requested_by=f"task {task_id or 'local'}")
        session.flush()
    else:
        request = session.get(RetrainRequest, request_id, with_for_update=True)
    if request is None or request.model != model:
        return _skip(session, model, f"retrain request {request_id} of {model!r} does not exist")
    trigger = request.trigger  # the request says why; a re-sent message may not
    if request.status == RequestStatus.PROCESSING:
        holder = session.get(TrainingRun, request.run_id) if request.run_id else None
        if not _own_earlier_attempt(holder, task_id, attempt):
            return _skip(session, model, f"retrain request {request.id} is being handled by run {request.run_id}",
                         holder=request.run_id, request_id=request.id)
        # Celery sends a retry only after the attempt before it ended (a transient error), so this
        # run is dead even though its lease has not run out yet: take the request over now.
        _end(session, holder, f"superseded by attempt {attempt} of the same task after a transient error")
    elif request.status != RequestStatus.PENDING:
        # Another message for the same request ran it (a re-send, or a retrain that joined a pending one).
        done = session.get(TrainingRun, request.run_id) if request.run_id else None
        outcome = f" by run {done.run_id} ({done.outcome or done.status.value})" if done else ""
        return _skip(session, model, f"retrain request {request.id} is {request.status.value}: already handled{outcome}",
                     request_id=request.id, handled_by=done.run_id if done else None,
                     outcome=done.outcome if done else None)
    run_id = new_run_id()
    try:
        with session.begin_nested():
            session.add(TrainingRun(
                run_id=run_id, model=model, trigger=trigger, status=RunStatus.RUNNING, started_at=now,
                lease_expires_at=now + timedelta(seconds=recovery.lease_seconds), celery_task_id=task_id, request_id=request.id, attempt=attempt,
                fine_tune=request.fine_tune, drift_report_id=request.drift_report_id, train_since=request.train_since,
            ))
    except IntegrityError:  # another request's run holds the model: ours stays pending for its follow-up
        holder_id = session.scalar(
            sa.select(TrainingRun.run_id).where(TrainingRun.model == model, TrainingRun.status == RunStatus.RUNNING)
        )
        message = f"another run ({holder_id}) holds the lock for {model!r}; request {request.id} runs after it"
        session.add(TrainingRun(
            run_id=run_id, model=model, trigger=trigger, status=RunStatus.SKIPPED, outcome="skipped",
            started_at=now, completed_at=now, error_message=message, celery_task_id=task_id,
            request_id=request.id, attempt=attempt,
        ))
        return _skip(session, model, message, holder=holder_id, run_id=run_id, request_id=request.id)
    request.status, request.started_at, request.run_id = RequestStatus.PROCESSING, now, run_id
    audit.record(session, "trigger", f"{model}: retrain started ({trigger.value})", model=model, run_id=run_id,
                 trigger=trigger.value, request_id=request.id)
    session.commit()
    return Claim(run_id, request.id, fine_tune=request.fine_tune, train_since=request.train_since)


def _own_earlier_attempt(holder: TrainingRun | None, task_id: str | None, attempt: int) -> bool:
    return (holder is not None and holder.status == RunStatus.RUNNING and task_id is not None
            and holder.celery_task_id == task_id and holder.attempt < attempt)


def _skip(session: Session, model: str, message: str, **extra: Any) -> Claim:
    session.commit()
    return Claim(None, extra.get("request_id"), {"status": "skipped", "model": model, "message": message} | extra)


def _end(session: Session, run: TrainingRun, why: str) -> None:
    """End a dead run. Nothing is published for it: its request is re-run, or fails and says why."""
    now = clock.now()
    run.status, run.outcome, run.completed_at, run.error_message = RunStatus.FAILED, "error", now, why
    run.notified_at = now
    audit.record(session, "lock_expired", f"{run.model}: run {run.run_id} ended: {why}", model=run.model,
                 run_id=run.run_id)


def expire_dead(session: Session, recovery: Recovery = DEFAULTS, model: str | None = None) -> list[TrainingRun]:
    """Fail every running run whose lease is over and hand its request back."""
    now = clock.now()
    stmt = sa.select(TrainingRun).where(TrainingRun.status == RunStatus.RUNNING, TrainingRun.lease_expires_at < now)
    if model is not None:
        stmt = stmt.where(TrainingRun.model == model)
    dead = list(session.scalars(stmt.with_for_update()))
    for run in dead:
        why = f"lease expired at {run.lease_expires_at:%H:%M:%S}: its worker died or lost the database"
        _end(session, run, why)
        if run.request_id is not None:
            retrain_requests.hand_back(session, run.request_id, run.run_id, why, recovery.max_lost_runs)
    return dead


def finish(session: Session, run_id: str, **values: Any) -> None:
    """Write the run's outcome, only while it still holds the lock (fenced by id and status)."""
    now = clock.now()
    started = session.scalar(sa.select(TrainingRun.started_at).where(TrainingRun.run_id == run_id))
    done = session.execute(
        sa.update(TrainingRun)
        .where(TrainingRun.run_id == run_id, TrainingRun.status == RunStatus.RUNNING)
        .values(completed_at=now, duration_seconds=(now - started).total_seconds() if started else None, **values)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        raise LostLock(f"run {run_id} lost its lock (lease expired); its result is discarded")


def renew(session: Session, run_id: str, lease: timedelta) -> bool:
    done = session.execute(
        sa.update(TrainingRun)
        .where(TrainingRun.run_id == run_id, TrainingRun.status == RunStatus.RUNNING)
        .values(lease_expires_at=clock.now() + lease)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1


class Heartbeat:
    """Renews a run's lease from a thread while the pipeline works (fitting releases the GIL).

    It beats three times a lease: a renewal that fails on a database error is retried at the next
    beat, so a short outage costs no lease. A renewal that finds the run no longer running sets
    `lost`: another run took over.
    """

    def __init__(self, bind: sa.Engine | sa.Connection, run_id: str, lease: timedelta, every: timedelta | None = None):
        self.bind, self.run_id, self.lease = bind, run_id, lease
        self.every = (every or lease / 3).total_seconds()
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with Session(self.bind) as session, session.begin():
                    alive = renew(session, self.run_id, self.lease)
            except Exception as exc:  # the database is away: the lease covers a short outage
                log.warning("run %s: lease not renewed (%s); retrying in %.0f s", self.run_id,
                            type(exc).__name__, self.every)
                continue
            if not alive:
                self.lost = True
                log.warning("run %s: lost its lock to another run; its result will be discarded", self.run_id)
                return
