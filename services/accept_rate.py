"""The accept-rate check of the hourly monitor (reference 002): `feedback` events record accepts and
rejects of a model's output per learning cycle; the average accept rate of the most recent `cycles`
cycles below `threshold`, with at least `min_cycles` of them, asks for a retrain.

A cycle's rate is its accepts over its accepts and rejects (its events summed); the cycles are averaged
unweighted, as the reference does, so a small cycle counts as much as a big one. "Most recent" is by
the cycle's last feedback. Every outcome of the check, firing or not, is recorded in system_events
(kind `check`) with its reason; no cycles yet is such a record, not an error.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import AcceptRateCheck
from retrainer.db.records import Feedback, TrainingRun, Trigger
from retrainer.services import audit

F = Feedback


def recent_cycles(session: Session, model: str, limit: int) -> list[dict[str, Any]]:
    """The model's `limit` most recent cycles, newest first: id, accepted, rejected, accept rate."""
    last = sa.func.max(F.recorded_at)
    rows = session.execute(
        sa.select(F.cycle_id, sa.func.sum(F.accepted), sa.func.sum(F.rejected), last)
        .where(F.model == model).group_by(F.cycle_id).order_by(last.desc(), F.cycle_id.desc()).limit(limit)
    ).all()
    return [{"cycle_id": c, "accepted": int(a), "rejected": int(r), "accept_rate": int(a) / (int(a) + int(r)),
             "last_feedback_at": at.isoformat()} for c, a, r, at in rows if int(a) + int(r) > 0]


def check(session: Session, model: str, cfg: AcceptRateCheck) -> dict[str, Any]:
    """status: retrain_needed | no_retrain_needed | insufficient_data | no_cycles; recorded either way."""
    now = clock.now()
    cycles = recent_cycles(session, model, cfg.cycles)
    rate = sum(c["accept_rate"] for c in cycles) / len(cycles) if cycles else None
    result: dict[str, Any] = {"model": model, "check": "accept_rate", "avg_accept_rate": rate,
                              "cycles": cycles, "threshold": cfg.threshold, "checked_at": now.isoformat()}
    if not cycles:
        status, message = "no_cycles", "No learning cycles recorded yet (feedback events)"
    elif len(cycles) < cfg.min_cycles:
        status, message = "insufficient_data", f"Need at least {cfg.min_cycles} learning cycles, got {len(cycles)}"
    elif rate >= cfg.threshold:  # type: ignore[operator]
        status, message = "no_retrain_needed", (f"Accept rate acceptable ({rate:.3f} >= {cfg.threshold} over the "
                                                f"last {len(cycles)} cycles)")
    else:
        status, message = "retrain_needed", (f"Accept rate degraded ({rate:.3f} < {cfg.threshold} over the "
                                             f"last {len(cycles)} cycles)")
        if (recent := _recent_run(session, model, now - timedelta(hours=cfg.cooldown_hours))) is not None:
            status, message = "suppressed", (f"{message}, but the retrain it started at {recent.isoformat()} is "
                                             f"within the cooldown ({cfg.cooldown_hours:g} h)")
    audit.record(session, "check", f"{model}: accept rate: {message}", model=model, check="accept_rate",
                 status=status, avg_accept_rate=rate, cycles=len(cycles), threshold=cfg.threshold)
    return result | {"status": status, "message": message}


def _recent_run(session: Session, model: str, since: Any) -> Any:
    return session.scalar(sa.select(sa.func.max(TrainingRun.started_at)).where(
        TrainingRun.model == model, TrainingRun.trigger == Trigger.ACCEPT_RATE, TrainingRun.started_at >= since))
