"""Live accuracy from prediction records, aggregated by the database (one SQL query, no row loading).

MAE, RMSE, R², accuracy (share within ±20 % of the actual) and count over a look-back window.
R² comes from sums (n, Σy, Σy², Σe²) so SQLite, which has no SQRT or VARIANCE, computes it too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from retrainer.models.ctr import WITHIN
from retrainer.services import registry
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import AccuracyCheck
from retrainer.db.records import PredictionRecord, PredictionStatus, TrainingRun

P = PredictionRecord
SEGMENTS = {"hook_type": P.hook_type, "template_id": P.template_id, "version_id": P.version_id}


@dataclass(frozen=True)
class Accuracy:
    mae: float | None
    rmse: float | None
    r2: float | None
    accuracy: float | None  # percent, as the reference reports it
    count: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aggregates() -> list[sa.ColumnElement[Any]]:
    err = P.actual - P.predicted
    within = sa.case((sa.func.abs(err) <= WITHIN * sa.func.abs(P.actual), 1.0), else_=0.0)
    return [
        sa.func.count().label("n"),
        sa.func.avg(sa.func.abs(err)).label("mae"),
        sa.func.avg(err * err).label("mse"),
        sa.func.sum(P.actual).label("sy"),
        sa.func.sum(P.actual * P.actual).label("syy"),
        sa.func.sum(err * err).label("sse"),
        sa.func.avg(within).label("within"),
    ]


def _to_accuracy(row: Any) -> Accuracy:
    n = int(row.n or 0)
    if n == 0:
        return Accuracy(None, None, None, None, 0)
    sst = float(row.syy) - float(row.sy) ** 2 / n
    r2 = 1.0 - float(row.sse) / sst if sst > 1e-15 else None
    return Accuracy(
        mae=float(row.mae), rmse=math.sqrt(max(float(row.mse), 0.0)), r2=r2,
        accuracy=100.0 * float(row.within), count=n,
    )


def _window(model: str, since: datetime, until: datetime, version_id: str | None) -> list[sa.ColumnElement[bool]]:
    where = [P.model == model, P.status == PredictionStatus.COMPLETED, P.predicted_at >= since, P.predicted_at <= until]
    if version_id is not None:
        where.append(P.version_id == version_id)
    return where


def live_accuracy(
    session: Session, model: str, lookback_days: float = 7, version_id: str | None = None, until: datetime | None = None
) -> Accuracy:
    until = until or clock.now()
    since = until - timedelta(days=lookback_days)
    row = session.execute(sa.select(*_aggregates()).where(*_window(model, since, until, version_id))).one()
    return _to_accuracy(row)


def breakdown(
    session: Session, model: str, by: str = "hook_type", lookback_days: float = 7, until: datetime | None = None
) -> dict[str, Accuracy]:
    if by not in SEGMENTS:
        raise ValueError(f"cannot break down by {by!r}; choose one of {', '.join(SEGMENTS)}")
    until = until or clock.now()
    column = SEGMENTS[by]
    rows = session.execute(
        sa.select(column.label("segment"), *_aggregates())
        .where(*_window(model, until - timedelta(days=lookback_days), until, None))
        .group_by(column)
        .order_by(column)
    ).all()
    return {str(r.segment): _to_accuracy(r) for r in rows}


def check(session: Session, model: str, cfg: AccuracyCheck) -> dict[str, Any]:
    """The daily check's decision in the reference shape. status: no_retrain_needed | retrain_needed
    | insufficient_data. Accuracy is that of the current production version (what is being served)."""
    now = clock.now()
    current = registry.production(session, model)
    acc = live_accuracy(session, model, cfg.lookback_days, current.version_id if current else None, until=now)
    result: dict[str, Any] = {
        "model": model,
        "production_version": current.version_id if current else None,
        "current_accuracy": {
            "ctr_mae": acc.mae, "ctr_rmse": acc.rmse, "ctr_r2": acc.r2,
            "ctr_accuracy": acc.accuracy, "total_predictions": acc.count,
        },
        "threshold": cfg.mae_threshold,
        "checked_at": now.isoformat(),
    }
    if acc.count < cfg.min_samples:
        return result | {
            "status": "insufficient_data", "count": acc.count,
            "message": f"Need at least {cfg.min_samples} completed predictions in the last {cfg.lookback_days} days, got {acc.count}",
        }
    assert acc.mae is not None
    if acc.mae <= cfg.mae_threshold:
        return result | {"status": "no_retrain_needed", "message": f"Model accuracy acceptable (MAE={acc.mae:.4f} <= {cfg.mae_threshold})"}
    # Cooldown: a candidate already trained on this degradation and kept must not be retrained in a
    # loop. Runs before the current version went live say nothing about its accuracy.
    since = now - timedelta(hours=cfg.cooldown_hours)
    if current is not None and current.promoted_at is not None:
        since = max(since, current.promoted_at)
    recent = session.scalar(
        sa.select(sa.func.max(TrainingRun.started_at)).where(
            TrainingRun.model == model, TrainingRun.started_at >= since, TrainingRun.outcome == "kept"
        )
    )
    if recent is not None and cfg.cooldown_hours > 0:
        return result | {
            "status": "no_retrain_needed",
            "message": f"MAE={acc.mae:.4f} > {cfg.mae_threshold}, but a candidate trained at {recent.isoformat()} "
                       f"was kept (cooldown {cfg.cooldown_hours:g} h)",
        }
    return result | {"status": "retrain_needed", "message": f"Model accuracy degraded (MAE={acc.mae:.4f} > {cfg.mae_threshold})"}
