"""The reconciler: repairs what crashes and lost messages leave behind, so nothing stays in a state
that nothing will ever leave. Beat runs it every few seconds (`checks.reconcile`); each pass:

1 expires runs whose lease ran out (their worker died) and hands their requests back;
2 re-sends requests that are pending past their due time (their message was lost) and those just
  handed back;
3 closes requests still marked running whose run has ended;
4 sweeps artifact files of runs that died before recording a version;
5 re-publishes decisions whose notification was never handed to the queue (the worker died after
  the commit, or the broker was away): the task marks each one it sends (`mark_notified`).

What it repaired is recorded in system_events (kind "reconcile"); a pass with nothing to repair
writes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import ModelVersion, RequestStatus, RetrainRequest, RunStatus, TrainingRun
from retrainer.services import artifacts, audit, retrain_requests, run_lock
from retrainer.services.retrain_requests import Enqueue

NOTIFY_WITHIN = timedelta(days=1)  # older undelivered decisions are history, not news


@dataclass
class Repairs:
    expired_runs: list[str] = field(default_factory=list)
    resent_requests: list[int] = field(default_factory=list)
    closed_requests: list[int] = field(default_factory=list)
    swept_files: list[str] = field(default_factory=list)
    renotified_runs: list[str] = field(default_factory=list)
    jobs: list[Enqueue] = field(default_factory=list)  # to enqueue after commit

    def __bool__(self) -> bool:
        return any((self.expired_runs, self.resent_requests, self.closed_requests, self.swept_files,
                    self.renotified_runs))

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "jobs"}


def reconcile(session: Session, settings: Settings) -> Repairs:
    repairs = Repairs()
    recovery = settings.recovery
    resend_after = timedelta(seconds=recovery.resend_after_seconds)
    dead = run_lock.expire_dead(session, recovery)
    repairs.expired_runs = [run.run_id for run in dead]
    _close_finished(session, repairs)
    _resend_pending(session, settings, repairs, {run.request_id for run in dead}, resend_after)
    _sweep(session, settings, repairs, timedelta(seconds=recovery.orphan_grace_seconds))
    _renotify(session, repairs, resend_after)
    if repairs:
        record(session, **repairs.as_dict())
    return repairs


def record(session: Session, **repaired: Any) -> None:
    """One audit row for what a pass repaired (lists of ids, or counts)."""
    summary = ", ".join(f"{len(v) if isinstance(v, list) else v} {k.replace('_', ' ')}" for k, v in repaired.items() if v)
    audit.record(session, "reconcile", f"reconciler repaired: {summary}", **repaired)


def _close_finished(session: Session, repairs: Repairs) -> None:
    stale = session.execute(
        sa.select(RetrainRequest, TrainingRun.status)
        .join(TrainingRun, TrainingRun.run_id == RetrainRequest.run_id)
        .where(RetrainRequest.status == RequestStatus.PROCESSING, TrainingRun.status != RunStatus.RUNNING)
    ).all()
    for request, run_status in stale:
        done = run_status in (RunStatus.COMPLETED, RunStatus.SKIPPED)  # skipped = insufficient data: answered
        retrain_requests.close(session, request.id, RequestStatus.COMPLETED if done else RequestStatus.FAILED,
                               None if done else f"its run {request.run_id} ended {run_status.value}")
        repairs.closed_requests.append(request.id)


def _resend_pending(session: Session, settings: Settings, repairs: Repairs, handed_back: set[int | None],
                    resend_after: timedelta) -> None:
    now = clock.now()
    pending = session.scalars(
        sa.select(RetrainRequest).where(RetrainRequest.status == RequestStatus.PENDING,
                                        RetrainRequest.not_before <= now)
    ).all()
    for request in pending:
        if request.id not in handed_back and request.not_before + resend_after > now:
            continue  # due, and its own message is probably on its way
        if request.model not in settings.models:
            retrain_requests.close(session, request.id, RequestStatus.CANCELLED,
                                   f"model {request.model!r} is no longer configured")
            repairs.closed_requests.append(request.id)
            continue
        request.not_before = now  # re-sent at most once per resend_after
        repairs.resent_requests.append(request.id)
        repairs.jobs.append(Enqueue(request.model, request.id, 0, request.priority))


def _sweep(session: Session, settings: Settings, repairs: Repairs, grace: timedelta) -> None:
    # Running runs first, then referenced files: a run that commits between the two reads is seen
    # either still running or already referenced, never neither.
    running = set(session.scalars(sa.select(TrainingRun.run_id).where(TrainingRun.status == RunStatus.RUNNING)))
    referenced = {Path(uri).name for uri in session.scalars(sa.select(ModelVersion.artifact_uri))}
    for path in artifacts.orphans(Path(settings.artifact_dir), running, referenced, grace):
        artifacts.remove(path)
        repairs.swept_files.append(str(path))


def mark_notified(session: Session, run_ids: list[str]) -> None:
    session.execute(sa.update(TrainingRun).where(TrainingRun.run_id.in_(run_ids)).values(notified_at=clock.now()))


def _renotify(session: Session, repairs: Repairs, resend_after: timedelta) -> None:
    now = clock.now()
    repairs.renotified_runs = list(session.scalars(
        sa.select(TrainingRun.run_id).where(
            TrainingRun.notified_at.is_(None), TrainingRun.outcome.is_not(None), TrainingRun.outcome != "skipped",
            TrainingRun.completed_at.between(now - NOTIFY_WITHIN, now - resend_after),
        )
    ))
