"""The drift check (beat, hourly by default): the model's recent inputs, the features of the predictions
it logged in the last `window_hours`, against the reference profile its production version recorded
when it was trained (services/drift.py). Dataset drift, at least `share` of the compared features
drifted, asks for a retrain, unless a drift-triggered run started within `cooldown_hours`.

Every check writes a drift_reports row (per feature: method, statistic, threshold, drifted, notes),
even when it cannot decide, so `retrainer status` shows the latest verdict; the retrain it asks for
names that report (retrain_requests and training_runs.drift_report_id). Every outcome is also recorded
in system_events (kind `check`) with its reason, the suppressions included.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import DriftCheck, ModelConfig
from retrainer.db.records import DriftReport, FeatureProfile, PredictionRecord, TrainingRun, Trigger
from retrainer.services import audit, drift, registry
from retrainer.services.errors import NotFound

# A check reads at most this many of the window's inputs, the newest: enough to see a drift of a tenth
# of a standard deviation, and bounded in time and memory whatever the traffic (they are read in chunks
# of CHUNK and kept as typed columns, never as one Python dict per row).
MAX_ROWS = 100_000
CHUNK = 10_000


def recent_inputs(session: Session, model: str, start: datetime, end: datetime, profile: dict[str, Any],
                  limit: int = MAX_ROWS) -> tuple[pd.DataFrame, set[str]]:
    """The features of the model's predictions logged in [start, end], newest first, at most `limit`,
    typed as the profile's features are (drift.typed); and the keys the profile does not know."""
    stmt = (sa.select(PredictionRecord.features)
            .where(PredictionRecord.model == model, PredictionRecord.predicted_at >= start,
                   PredictionRecord.predicted_at <= end)
            .order_by(PredictionRecord.predicted_at.desc()).limit(limit)
            .execution_options(yield_per=CHUNK))
    frames, extra = [], set()
    for chunk in session.scalars(stmt).partitions():
        raw = pd.DataFrame.from_records([row if isinstance(row, dict) else {} for row in chunk])
        extra |= set(raw.columns) - set(profile["features"])
        frames.append(drift.typed(raw, profile))
    frame = pd.concat(frames, ignore_index=True) if frames else drift.typed(pd.DataFrame(), profile)
    return frame, extra


def check(session: Session, model: str, cfg: ModelConfig) -> dict[str, Any]:
    """status: retrain_needed | no_retrain_needed | suppressed | insufficient_data | no_reference; a
    drift report is written for each, and the outcome recorded in system_events."""
    rule: DriftCheck = cfg.drift
    now = clock.now()
    start = now - timedelta(hours=rule.window_hours)
    num_t, cat_t = drift.thresholds(rule.numeric, rule.categorical, rule.numeric_threshold,
                                    rule.categorical_threshold)
    report = DriftReport(model=model, checked_at=now, window_start=start, window_end=now, rows=0,
                         share_threshold=rule.share, features={})
    production = registry.production(session, model)
    profile = session.get(FeatureProfile, production.version_id) if production else None
    comparison: drift.Comparison | None = None
    if production is None:
        report.status, status = "no_reference", "no_reference"
        message = "No production version: no reference profile to compare recent inputs with"
    elif profile is None:
        report.version_id, report.status, status = production.version_id, "no_reference", "no_reference"
        message = (f"Production version {production.version_id} has no reference profile (trained before "
                   "profiles were recorded); its next retrain records one")
    else:
        report.version_id = production.version_id
        frame, extra = recent_inputs(session, model, start, now, profile.profile)
        report.rows = len(frame)
        window = f"in the last {rule.window_hours:g} h" + (f" (the newest {MAX_ROWS:,})" if len(frame) >= MAX_ROWS else "")
        if len(frame) < rule.min_samples:
            report.status, status = "insufficient_data", "insufficient_data"
            message = f"{len(frame)} recent input(s) {window}, need at least {rule.min_samples}"
        else:
            comparison = drift.compare(profile.profile, frame, numeric=rule.numeric, categorical=rule.categorical,
                                       numeric_threshold=num_t, categorical_threshold=cat_t, share=rule.share,
                                       min_samples=rule.min_samples)
            if extra:
                comparison.notes.append(drift.not_profiled(extra))
            report.features, report.drifted, report.drifted_share = comparison.features, comparison.drifted, comparison.drifted_share
            status, message = _verdict(comparison, rule, len(frame), window)
            report.status = "drift_detected" if comparison.drifted else (
                "insufficient_data" if status == "insufficient_data" else "no_drift")
            if status == "retrain_needed" and (recent := _recent_run(session, model, now, rule.cooldown_hours)):
                status, message = "suppressed", (f"{message}, but the drift retrain started at {recent.isoformat()} "
                                                 f"is within the cooldown ({rule.cooldown_hours:g} h)")
    notes = comparison.notes if comparison else []
    report.message = "; ".join([message, *notes])
    session.add(report)
    session.flush()
    audit.record(session, "check", f"{model}: drift: {report.message}", model=model, check="drift", status=status,
                 drift_report_id=report.id, drifted_share=report.drifted_share, share=rule.share, rows=report.rows,
                 drifted_features=comparison.drifted_features if comparison else [])
    return {"model": model, "check": "drift", "status": status, "message": report.message,
            "drift_report_id": report.id, "production_version": report.version_id, "rows": report.rows,
            "drifted_share": report.drifted_share, "share_threshold": rule.share,
            "numeric": {"method": rule.numeric, "threshold": num_t},
            "categorical": {"method": rule.categorical, "threshold": cat_t},
            "window_start": start.isoformat(), "window_end": now.isoformat(), "features": report.features,
            "checked_at": now.isoformat()}


def _verdict(comparison: drift.Comparison, rule: DriftCheck, rows: int, window: str) -> tuple[str, str]:
    compared, drifted = comparison.compared, comparison.drifted_features
    if not compared:
        return "insufficient_data", (f"{rows} recent inputs {window}, but no feature has {rule.min_samples} usable "
                                     "values")
    named = f": {', '.join(drifted)}" if drifted else ""
    counted = f"{len(drifted)} of {len(compared)} features drifted ({comparison.drifted_share:.0%}"
    if comparison.drifted:
        return "retrain_needed", f"Dataset drift: {counted} >= {rule.share:.0%}) over {rows} inputs {window}{named}"
    return "no_retrain_needed", f"No dataset drift: {counted} < {rule.share:.0%}) over {rows} inputs {window}{named}"


def _recent_run(session: Session, model: str, now: datetime, hours: float) -> datetime | None:
    return session.scalar(sa.select(sa.func.max(TrainingRun.started_at)).where(
        TrainingRun.model == model, TrainingRun.trigger == Trigger.DRIFT,
        TrainingRun.started_at >= now - timedelta(hours=hours)))


# --- reading reports ------------------------------------------------------------------------------

def latest(session: Session, model: str) -> DriftReport | None:
    return next(iter(recent(session, model, 1)), None)


def recent(session: Session, model: str | None, limit: int) -> list[DriftReport]:
    """Stored reports, newest first: of one model, or of every model (None)."""
    query = sa.select(DriftReport).order_by(DriftReport.checked_at.desc(), DriftReport.id.desc()).limit(limit)
    return list(session.scalars(query if model is None else query.where(DriftReport.model == model)))


def get(session: Session, report_id: int) -> DriftReport:
    report = session.get(DriftReport, report_id)
    if report is None:
        raise NotFound(f"drift report {report_id} not found")
    return report


def report_dict(r: DriftReport) -> dict[str, Any]:
    return {"id": r.id, "model": r.model, "version_id": r.version_id, "checked_at": r.checked_at.isoformat(),
            "window_start": r.window_start.isoformat() if r.window_start else None,
            "window_end": r.window_end.isoformat() if r.window_end else None, "rows": r.rows, "status": r.status,
            "drifted": r.drifted, "drifted_share": r.drifted_share, "share_threshold": r.share_threshold,
            "features": r.features, "message": r.message}


def summary(session: Session, model: str) -> dict[str, Any] | None:
    """The latest verdict, as `retrainer status` shows it; None before the first check."""
    r = latest(session, model)
    if r is None:
        return None
    return {"status": r.status, "drifted_share": r.drifted_share, "share_threshold": r.share_threshold,
            "report_id": r.id, "version_id": r.version_id, "checked_at": r.checked_at.isoformat()}
