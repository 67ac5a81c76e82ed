"""Live accuracy from prediction records, aggregated by the database (one SQL query, no row loading).

What is computed follows the model family's live kind (retrainer.models.base.LIVE_METRICS):
- regression: MAE, RMSE, R² and the share within ±20 % of the actual;
- classification: accuracy (share of right classes) and, when the window holds only classes 0 and
  1, precision and recall of class 1;
- forecast (hours): MAE, RMSE and the shares within 6, 12 and 24 h.
Shares are fractions. R² comes from sums (n, Σy, Σy², Σe²) and RMSE from the mean square, so SQLite,
which has no SQRT or VARIANCE, computes them too. Log loss is not computed live: it needs the
logarithm of a JSON member picked by each row's class, which SQLite has only when built with its
math functions; the family's own evaluation reports it on the holdout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import AccuracyCheck
from retrainer.db.records import PredictionRecord, PredictionStatus, TrainingRun
from retrainer.models.base import LIVE_METRICS, Live, family_class, live_check
from retrainer.services import registry, validation

P = PredictionRecord
WITHIN_FRACTION = 0.20  # regression: "accurate" = within ±20 % of the actual value
WITHIN_HOURS = (6, 12, 24)  # forecast


@dataclass(frozen=True)
class Accuracy:
    kind: Live
    count: int
    metrics: dict[str, float | None] = field(default_factory=dict)  # LIVE_METRICS[kind]; None: not measurable

    def __getitem__(self, name: str) -> float | None:
        return self.metrics[name]

    def as_dict(self) -> dict[str, Any]:
        return {**self.metrics, "count": self.count}


def _ratio(num: Any, den: Any) -> float | None:
    return float(num) / float(den) if den else None


def _share(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.avg(sa.case((condition, 1.0), else_=0.0))


def _aggregates(kind: Live) -> list[sa.ColumnElement[Any]]:
    n = sa.func.count().label("n")
    if kind == Live.CLASSIFICATION:
        hit = sa.case((P.actual == P.predicted, 1), else_=0)
        both_one = sa.case(((P.actual == 1) & (P.predicted == 1), 1), else_=0)
        return [
            n,
            sa.func.avg(hit * 1.0).label("accuracy"),
            sa.func.sum(both_one).label("tp"),
            sa.func.sum(sa.case((P.predicted == 1, 1), else_=0)).label("pred1"),
            sa.func.sum(sa.case((P.actual == 1, 1), else_=0)).label("act1"),
            sa.func.sum(sa.case(((P.actual > 1) | (P.predicted > 1), 1), else_=0)).label("other"),
        ]
    err = P.actual - P.predicted
    cols = [n, sa.func.avg(sa.func.abs(err)).label("mae"), sa.func.avg(err * err).label("mse")]
    if kind == Live.FORECAST:
        return cols + [_share(sa.func.abs(err) <= h).label(f"within_{h}h") for h in WITHIN_HOURS]
    return cols + [
        sa.func.sum(P.actual).label("sy"),
        sa.func.sum(P.actual * P.actual).label("syy"),
        sa.func.sum(err * err).label("sse"),
        _share(sa.func.abs(err) <= WITHIN_FRACTION * sa.func.abs(P.actual)).label("within_20pct"),
    ]


def _to_accuracy(kind: Live, row: Any) -> Accuracy:
    n = int(row.n or 0)
    if n == 0:
        return Accuracy(kind, 0, dict.fromkeys(LIVE_METRICS[kind]))
    if kind == Live.CLASSIFICATION:
        binary = not row.other  # only classes 0 and 1 in the window: class 1 is "positive"
        return Accuracy(kind, n, {
            "accuracy": float(row.accuracy),
            "precision": _ratio(row.tp, row.pred1) if binary else None,
            "recall": _ratio(row.tp, row.act1) if binary else None,
        })
    values = {"mae": float(row.mae), "rmse": math.sqrt(max(float(row.mse), 0.0))}
    if kind == Live.FORECAST:
        return Accuracy(kind, n, values | {f"within_{h}h": float(row._mapping[f"within_{h}h"]) for h in WITHIN_HOURS})
    sst = float(row.syy) - float(row.sy) ** 2 / n
    values["r2"] = 1.0 - float(row.sse) / sst if sst > 1e-15 else None
    return Accuracy(kind, n, values | {"within_20pct": float(row.within_20pct)})


def _window(model: str, since: datetime, until: datetime, version_id: str | None) -> list[sa.ColumnElement[bool]]:
    where = [P.model == model, P.status == PredictionStatus.COMPLETED, P.predicted_at >= since, P.predicted_at <= until]
    if version_id is not None:
        where.append(P.version_id == version_id)
    return where


def live_accuracy(
    session: Session, model: str, lookback_days: float = 7, version_id: str | None = None,
    until: datetime | None = None, *, kind: Live,
) -> Accuracy:
    until = until or clock.now()
    since = until - timedelta(days=lookback_days)
    row = session.execute(sa.select(*_aggregates(kind)).where(*_window(model, since, until, version_id))).one()
    return _to_accuracy(kind, row)


def breakdown(
    session: Session, model: str, by: str, lookback_days: float = 7, until: datetime | None = None, *, kind: Live,
) -> dict[str, Accuracy]:
    """Live accuracy per value of a segment key (rows without that key are left out), or per version_id."""
    by = validation.text(by, "by", 64)
    # JSON member as text: json_extract on SQLite, ->> on PostgreSQL
    column = P.version_id if by == "version_id" else P.segments[by].as_string()
    until = until or clock.now()
    rows = session.execute(
        sa.select(column.label("segment"), *_aggregates(kind))
        .where(*_window(model, until - timedelta(days=lookback_days), until, None), column.is_not(None))
        .group_by(column)
        .order_by(column)
    ).all()
    return {str(r.segment): _to_accuracy(kind, r) for r in rows}


def _reference_keys(family: str, acc: Accuracy) -> dict[str, Any]:
    """The CTR reference's names for the same figures (its check's JSON: ctr_mae ... total_predictions),
    kept for the ctr family so its consumers keep working. ctr_accuracy is a fraction, as every
    share here (the reference printed a percent)."""
    if family != "ctr":
        return {}
    m = acc.metrics
    return {"ctr_mae": m["mae"], "ctr_rmse": m["rmse"], "ctr_r2": m["r2"], "ctr_accuracy": m["within_20pct"],
            "total_predictions": acc.count}


def check(session: Session, model: str, cfg: AccuracyCheck, family: str) -> dict[str, Any]:
    """The daily check's decision in the reference shape. status: no_retrain_needed | retrain_needed
    | insufficient_data. Accuracy is that of the current production version (what is being served);
    `family` names the model's family, whose live kind decides what is measured."""
    now = clock.now()
    kind = family_class(family).metric_spec.live
    metric, threshold = live_check(family, cfg.metric, cfg.threshold)
    higher_is_better = LIVE_METRICS[kind][metric]
    current = registry.production(session, model)
    acc = live_accuracy(session, model, cfg.lookback_days, current.version_id if current else None, until=now, kind=kind)
    result: dict[str, Any] = {
        "model": model,
        "production_version": current.version_id if current else None,
        "current_accuracy": acc.as_dict() | _reference_keys(family, acc),
        "metric": metric,
        "threshold": threshold,
        "checked_at": now.isoformat(),
    }
    if acc.count < cfg.min_samples:
        return result | {
            "status": "insufficient_data", "count": acc.count,
            "message": f"Need at least {cfg.min_samples} completed predictions in the last {cfg.lookback_days} days, got {acc.count}",
        }
    value = acc[metric]
    shown = f"{metric}={value:.4f}" if value is not None else metric
    if value is None:
        return result | {"status": "no_retrain_needed", "message": f"{metric} cannot be measured on these outcomes"}
    if threshold is None:
        return result | {"status": "no_retrain_needed",
                         "message": f"{shown}; no threshold set (models.{model}.accuracy.threshold)"}
    worse = "<" if higher_is_better else ">"
    if not (value < threshold if higher_is_better else value > threshold):
        ok = ">=" if higher_is_better else "<="
        return result | {"status": "no_retrain_needed", "message": f"Model accuracy acceptable ({shown} {ok} {threshold})"}
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
            "message": f"{shown} {worse} {threshold}, but a candidate trained at {recent.isoformat()} "
                       f"was kept (cooldown {cfg.cooldown_hours:g} h)",
        }
    return result | {"status": "retrain_needed", "message": f"Model accuracy degraded ({shown} {worse} {threshold})"}
