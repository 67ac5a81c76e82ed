"""Repeated failures: a model whose retrains keep failing needs a person, not another retry.

After a run fails, `alert_if_repeated` counts the model's failed runs in the last `WINDOW`; at
`THRESHOLD` or more it records an `alert` (system_events), at most once per `QUIET` per model, so
further failures that day do not page again. The caller sends the alert after commit
(notifications.notify_alert), as the accuracy check's alerts are sent.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import RunStatus, SystemEvent, TrainingRun
from retrainer.services import audit

THRESHOLD = 3
WINDOW = timedelta(days=7)
QUIET = timedelta(days=1)
KIND = "repeated_failures"  # the alert's payload["alert"]


def alert_if_repeated(session: Session, model: str) -> SystemEvent | None:
    """The alert recorded now (flushed, so it has an id), or None: too few failures, or already alerted."""
    now = clock.now()
    failed = session.scalars(
        sa.select(TrainingRun).where(TrainingRun.model == model, TrainingRun.status == RunStatus.FAILED,
                                     TrainingRun.started_at >= now - WINDOW)
        .order_by(TrainingRun.started_at.desc())
    ).all()
    if len(failed) < THRESHOLD:
        return None
    recent = session.scalars(
        sa.select(SystemEvent).where(SystemEvent.model == model, SystemEvent.kind == "alert",
                                     SystemEvent.created_at >= now - QUIET)
    )
    if any(event.payload.get("alert") == KIND for event in recent):
        return None
    latest = failed[0]
    why = (latest.error_message or latest.outcome or "no message").splitlines()[0][:300]
    event = audit.record(
        session, "alert",
        f"{model}: {len(failed)} failed retrains in the last {WINDOW.days} days; latest {latest.run_id}: {why} "
        f"(`retrainer logs {latest.run_id}`)",
        model=model, alert=KIND, failed_runs=[r.run_id for r in failed], window_days=WINDOW.days,
    )
    session.flush()
    return event
