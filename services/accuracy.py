"""Live accuracy from the hourly rollup (services/live_rollup.py), no row loading and no scan.

What is computed follows the model family's live kind (retrainer.models.base.LIVE_METRICS):
- regression: MAE, RMSE, R² and the share within ±20 % of the actual;
- classification: accuracy (share of right classes) and, when the window holds only classes 0 and
  1, precision and recall of class 1;
- forecast (hours): MAE, RMSE and the shares within 6, 12 and 24 h.
Shares are fractions. Every metric comes from additive sums (n, Σ|e|, Σe², Σy, Σy², counts), so
hours add up, and SQLite, which has no SQRT or VARIANCE, computes them too.

The window is exact: `lookback_days` back from `until`, to the microsecond. The whole hours inside it
come from the rollup (~170 rows for 7 days, whatever the traffic); the two partial hours at its edges,
together one hour of records, from the records themselves, with the same sums. A breakdown by a
segment key scans the window's records. Log loss is not computed live: it needs the logarithm of a
JSON member picked by each row's class, which SQLite has only when built with its math functions;
the family's own evaluation reports it on the holdout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import AccuracyCheck
from retrainer.db.records import PredictionKind, PredictionRecord, PredictionStatus, TrainingRun
from retrainer.models.base import LIVE_METRICS, Live, family_class, live_check
from retrainer.services import audit, live_rollup, registry, validation

P = PredictionRecord


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


TICK = timedelta(microseconds=1)  # the resolution of a stored timestamp (PostgreSQL, SQLite text, Python)


def window(until: datetime, lookback_days: float) -> tuple[datetime, datetime]:
    """[since, end): from exactly `lookback_days` before `until` to `until` itself, included."""
    until = clock.as_utc(until)
    return until - timedelta(days=lookback_days), until + TICK


def _pieces(since: datetime, end: datetime) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """The window cut into the whole hours the rollup answers (first and last hour start, or None) and
    the partial ranges at its edges that the records answer ([start, stop) each)."""
    first = live_rollup.hour_of(since)
    if first < since:
        first += timedelta(hours=1)  # the first hour that starts inside the window
    stop = live_rollup.hour_of(end - TICK)  # the last hour, which holds `until`, is partial
    if first >= stop:
        return None, [(since, end)]
    return (first, stop - timedelta(hours=1)), [(since, first), (stop, end)]


def _edges(ranges: list[tuple[datetime, datetime]]) -> sa.ColumnElement[bool]:
    return sa.or_(*[(P.predicted_at >= a) & (P.predicted_at < b) for a, b in ranges if a < b])


def add_sums(*rows: Any) -> SimpleNamespace:
    """Sums of the same names added (a missing or NULL sum is 0)."""
    return SimpleNamespace(**{c: sum(float(getattr(r, c, 0) or 0) for r in rows) for c in live_rollup.SUMS})


def raw_where(model: str, since: datetime, end: datetime, kind: Live,
              version_id: str | None = None, ranges: list[tuple[datetime, datetime]] | None = None,
              ) -> list[sa.ColumnElement[bool]]:
    """The completed records of [since, end) (or of `ranges`). Only rows of the kind asked for: a record
    keeps the kind it was served with, so a model whose family changed is not measured with the wrong
    formulas."""
    where = [P.model == model, P.status == PredictionStatus.COMPLETED, P.kind == PredictionKind(kind.value),
             _edges(ranges or [(since, end)])]
    if version_id is not None:
        where.append(P.version_id == version_id)
    return where


def _count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def raw_sums(kind: Live) -> list[sa.ColumnElement[Any]]:
    """The rollup's sums (live_rollup.SUMS) computed over prediction_records: what a breakdown by a
    segment key reads, and the reference the rollup is tested against."""
    err = P.actual - P.predicted
    if kind == Live.CLASSIFICATION:
        return [
            sa.func.count().label("n"),
            _count(P.actual == P.predicted).label("correct"),
            _count((P.actual == 1) & (P.predicted == 1)).label("true_pos"),
            _count(P.predicted == 1).label("pred_pos"),
            _count(P.actual == 1).label("actual_pos"),
            _count((P.actual > 1) | (P.predicted > 1)).label("non_binary"),
        ]
    cols = [sa.func.count().label("n"), sa.func.sum(sa.func.abs(err)).label("sum_abs_err"),
            sa.func.sum(err * err).label("sum_sq_err")]
    if kind == Live.FORECAST:
        return cols + [_count(sa.func.abs(err) <= h).label(f"within_{h}h") for h in live_rollup.WITHIN_HOURS]
    return cols + [
        sa.func.sum(P.actual).label("sum_y"),
        sa.func.sum(P.actual * P.actual).label("sum_yy"),
        _count(sa.func.abs(err) <= live_rollup.WITHIN_FRACTION * sa.func.abs(P.actual)).label("within_20pct"),
    ]


def from_sums(kind: Live, row: Any) -> Accuracy:
    """The kind's live metrics from the additive sums (a rollup row or raw_sums)."""
    n = int(row.n or 0)
    if n == 0:
        return Accuracy(kind, 0, dict.fromkeys(LIVE_METRICS[kind]))
    if kind == Live.CLASSIFICATION:
        binary = not row.non_binary  # only classes 0 and 1 in the window: class 1 is "positive"
        return Accuracy(kind, n, {
            "accuracy": float(row.correct) / n,
            "precision": _ratio(row.true_pos, row.pred_pos) if binary else None,
            "recall": _ratio(row.true_pos, row.actual_pos) if binary else None,
        })
    values = {"mae": float(row.sum_abs_err) / n, "rmse": math.sqrt(max(float(row.sum_sq_err) / n, 0.0))}
    if kind == Live.FORECAST:
        return Accuracy(kind, n, values | {f"within_{h}h": float(getattr(row, f"within_{h}h")) / n
                                           for h in live_rollup.WITHIN_HOURS})
    sst = float(row.sum_yy) - float(row.sum_y) ** 2 / n
    values["r2"] = 1.0 - float(row.sum_sq_err) / sst if sst > 1e-15 else None
    return Accuracy(kind, n, values | {"within_20pct": float(row.within_20pct) / n})


def live_accuracy(
    session: Session, model: str, lookback_days: float = 7, version_id: str | None = None,
    until: datetime | None = None, *, kind: Live,
) -> Accuracy:
    """Live accuracy over the exact window (see `window`): whole hours from the rollup, the edges from
    the records."""
    since, end = window(until or clock.now(), lookback_days)
    hours, edges = _pieces(since, end)
    rows = [session.execute(sa.select(*raw_sums(kind)).where(
        *raw_where(model, since, end, kind, version_id, ranges=edges))).one()]
    if hours is not None:
        rows += live_rollup.totals(session, model, PredictionKind(kind.value), *hours, version_id)
    return from_sums(kind, add_sums(*rows))


def raw_live_accuracy(
    session: Session, model: str, lookback_days: float = 7, version_id: str | None = None,
    until: datetime | None = None, *, kind: Live,
) -> Accuracy:
    """The same figures by scanning prediction_records (the path before the rollup; a reference)."""
    since, end = window(until or clock.now(), lookback_days)
    row = session.execute(sa.select(*raw_sums(kind)).where(*raw_where(model, since, end, kind, version_id))).one()
    return from_sums(kind, row)


def breakdown(
    session: Session, model: str, by: str, lookback_days: float = 7, until: datetime | None = None, *, kind: Live,
    version_id: str | None = None,
) -> dict[str, Accuracy]:
    """Live accuracy per version_id (from the rollup; rows without a version left out), or per value of
    a segment key (rows without that key left out). Segments are free keys, any of which a caller may
    group by, so no rollup can hold them all: that breakdown scans the window's raw records."""
    by = validation.text(by, "by", 64)
    since, end = window(until or clock.now(), lookback_days)
    if by == "version_id":
        hours, edges = _pieces(since, end)
        parts: dict[str, list[Any]] = {}
        raw = session.execute(sa.select(P.version_id.label("segment"), *raw_sums(kind))
                              .where(*raw_where(model, since, end, kind, ranges=edges), P.version_id.is_not(None))
                              .group_by(P.version_id)).all()
        rolled = [] if hours is None else live_rollup.totals(session, model, PredictionKind(kind.value), *hours,
                                                             by_version=True)
        for r in [*raw, *rolled]:
            parts.setdefault(str(r.segment), []).append(r)
        return {version: from_sums(kind, add_sums(*rows)) for version, rows in sorted(parts.items())}
    column = P.segments[by].as_string()  # JSON member as text: json_extract on SQLite, ->> on PostgreSQL
    rows = session.execute(
        sa.select(column.label("segment"), *raw_sums(kind))
        .where(*raw_where(model, since, end, kind, version_id), column.is_not(None))
        .group_by(column)
        .order_by(column)
    ).all()
    return {str(r.segment): from_sums(kind, r) for r in rows}


def _reference_keys(family: str, acc: Accuracy) -> dict[str, Any]:
    """The CTR reference's names for the same figures (its check's JSON: ctr_mae ... total_predictions),
    kept for the ctr family so its consumers keep working. ctr_accuracy is a fraction, as every
    share here (the reference printed a percent)."""
    if family != "ctr":
        return {}
    m = acc.metrics
    return {"ctr_mae": m["mae"], "ctr_rmse": m["rmse"], "ctr_r2": m["r2"], "ctr_accuracy": m["within_20pct"],
            "total_predictions": acc.count}


def check(session: Session, model: str, cfg: AccuracyCheck, family: str, rows_needed: int | None = None,
          ) -> dict[str, Any]:
    """The daily check's decision in the reference shape. status: no_retrain_needed | retrain_needed
    | waiting_for_data | insufficient_data. Accuracy is that of the current production version (what is
    being served); `family` names the model's family, whose live kind decides what is measured. With
    `rows_needed` (services/since_change.py) a breach is placed in time: the retrain trains from then on
    (`train_since`), or waits for that many rows after it. Recorded either way (system_events `check`)."""
    result = _decide(session, model, cfg, family, rows_needed)
    value = result["current_accuracy"].get(result["metric"])
    audit.record(session, "check", f"{model}: accuracy: {result['message']}", model=model, check="accuracy",
                 status=result["status"], metric=result["metric"], value=value, threshold=result["threshold"])
    return result


def second_target(session: Session, model: str, cfg: AccuracyCheck, version_id: str | None,
                  until: datetime | None = None) -> dict[str, Any] | None:
    """The configured second target's live metric over the check's window (records that carry both its
    prediction and its outcome), and whether it breaches; None when none is configured."""
    rule = cfg.second_target
    if rule is None:
        return None
    since, end = window(until or clock.now(), cfg.lookback_days)
    predicted = P.targets[(rule.target, "predicted")].as_float()
    actual = P.targets[(rule.target, "actual")].as_float()
    err = sa.func.abs(actual - predicted)
    where = [P.model == model, P.status == PredictionStatus.COMPLETED, _edges([(since, end)]),
             actual.is_not(None), predicted.is_not(None), *([P.version_id == version_id] if version_id else [])]
    n, sum_abs, sum_sq, near = session.execute(
        sa.select(sa.func.count(), sa.func.sum(err), sa.func.sum(err * err),
                  _count(err <= 0.2 * sa.func.abs(actual))).where(*where)).one()
    n = int(n or 0)
    value = None if n == 0 else {"mae": float(sum_abs) / n, "rmse": math.sqrt(float(sum_sq) / n),
                                 "within_20pct": int(near or 0) / n}[rule.metric]
    higher = rule.metric == "within_20pct"
    breached = value is not None and n >= cfg.min_samples and (value < rule.threshold if higher else value > rule.threshold)
    return {"target": rule.target, "metric": rule.metric, "value": value, "count": n, "threshold": rule.threshold,
            "breached": breached}


def holdout_figure(family: str, metric: str, version: Any) -> float | None:
    """The version's own holdout value of a live metric (the name may differ: a family maps live names
    to its metric names in `live_holdout_metric`, e.g. timing's mae -> mae_hours); None if it has none."""
    if version is None:
        return None
    name = getattr(family_class(family), "live_holdout_metric", {}).get(metric, metric)
    value = (version.metrics or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _relative(family: str, metric: str, absolute: float | None, pct: float, higher_is_better: bool,
              version: Any) -> tuple[float | None, float | None, dict[str, Any]]:
    """The effective threshold when a relative one is configured: the stricter of the absolute threshold
    and the production version's holdout figure worsened by `pct` percent (either breach counts)."""
    figure = holdout_figure(family, metric, version)
    relative = None if figure is None else figure * (1 - pct / 100 if higher_is_better else 1 + pct / 100)
    info = {"pct": pct, "holdout_value": figure, "threshold": relative, "absolute_threshold": absolute}
    known = [t for t in (absolute, relative) if t is not None]
    effective = (max(known) if higher_is_better else min(known)) if known else None
    return effective, effective, info


# Rules that keep a candidate without judging it worse: the wait is over when they pass, so a candidate
# kept by them says nothing about whether retraining helps, and must not silence the check.
NOT_ON_MERIT = frozenset({"cooldown", "evidence", "auto_promote"})


def _kept_on_merit(session: Session, model: str, since: datetime) -> datetime | None:
    """When the latest candidate since `since` was kept because it was not better (its improvement,
    significance or guards failed), or None. Runs before decision records count as on merit."""
    kept = session.execute(
        sa.select(TrainingRun.started_at, TrainingRun.decision).where(
            TrainingRun.model == model, TrainingRun.started_at >= since, TrainingRun.outcome == "kept")
        .order_by(TrainingRun.started_at.desc()).limit(20)).all()
    for started, decision in kept:
        failed = {r.get("rule") for r in (decision or {}).get("rules", []) if r.get("passed") is False}
        if not failed or failed - NOT_ON_MERIT:
            return started
    return None


def _decide(session: Session, model: str, cfg: AccuracyCheck, family: str, rows_needed: int | None = None,
            ) -> dict[str, Any]:
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
    second = second_target(session, model, cfg, current.version_id if current else None, now)
    if second is not None:
        result["second_target"] = second
    if cfg.segments:  # where it is worse: per value of each configured segment key (informational)
        result["segments"] = {
            key: {value: part.as_dict() for value, part in breakdown(
                session, model, key, cfg.lookback_days, now, kind=kind,
                version_id=current.version_id if current else None).items()}
            for key in cfg.segments}
    if cfg.relative_pct is not None:  # relative to the version's own holdout figure: either breach counts
        threshold, result["threshold"], result["relative"] = _relative(family, metric, threshold, cfg.relative_pct,
                                                                       higher_is_better, current)
    if acc.count < cfg.min_samples:
        return result | {
            "status": "insufficient_data", "count": acc.count,
            "message": f"Need at least {cfg.min_samples} completed predictions in the last {cfg.lookback_days} days, got {acc.count}",
        }
    value = acc[metric]
    shown = f"{metric}={value:.4f}" if value is not None else metric
    worse = "<" if higher_is_better else ">"
    primary_breach = not (value is None or threshold is None
                          or not (value < threshold if higher_is_better else value > threshold))
    if not primary_breach:
        if second is not None and second["breached"]:  # the first target is fine, the second is not
            worse = "<" if second["metric"] == "within_20pct" else ">"
            shown = f"{second['target']} {second['metric']}={second['value']:.4f}"
            value, threshold, metric = second["value"], second["threshold"], f"{second['target']}:{second['metric']}"
        elif value is None:
            return result | {"status": "no_retrain_needed", "message": f"{metric} cannot be measured on these outcomes"}
        elif threshold is None:
            return result | {"status": "no_retrain_needed",
                             "message": f"{shown}; no threshold set (models.{model}.accuracy.threshold)"}
        else:
            ok = ">=" if higher_is_better else "<="
            return result | {"status": "no_retrain_needed", "message": f"Model accuracy acceptable ({shown} {ok} {threshold})"}
    # Cooldown: a candidate already trained on this degradation and kept must not be retrained in a
    # loop. Runs before the current version went live say nothing about its accuracy.
    since = now - timedelta(hours=cfg.cooldown_hours)
    if current is not None and current.promoted_at is not None:
        since = max(since, current.promoted_at)
    recent = _kept_on_merit(session, model, since)
    if recent is not None and cfg.cooldown_hours > 0:
        # Retraining did not help: a person has to look (the data, the features, the threshold).
        message = (f"{shown} {worse} {threshold}, but a candidate trained at {recent.isoformat()} "
                   f"was kept (cooldown {cfg.cooldown_hours:g} h)")
        alert = audit.record(session, "alert", f"{model}: still degraded after a kept candidate: {message}",
                             model=model, version_id=current.version_id if current else None, metric=metric,
                             value=value, threshold=threshold)
        session.flush()
        return result | {"status": "no_retrain_needed", "message": message, "alert_event_id": alert.id}
    message = f"Model accuracy degraded ({shown} {worse} {threshold})"
    if rows_needed is not None and primary_breach and current is not None:
        from retrainer.services import since_change  # numpy/scipy: only where a breach is placed

        change = since_change.find(session, model, current, kind, rows_needed)
        if change is not None:
            result["change"] = change.as_dict()
            if not change.ready:
                return result | {"status": "waiting_for_data", "message": (
                    f"{message}; {change.describe()}: waiting for {change.needed} labelled rows from then on "
                    f"to train on, {change.rows} so far")}
            result["train_since"] = change.at.isoformat()
            message += f"; {change.describe()}: training on the {change.rows} rows since"
    return result | {"status": "retrain_needed", "message": message}
