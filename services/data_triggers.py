"""Two checks on what arrived since the last run (seeds 003 and 004):

- new data: at least `min_samples` new labelled rows and at least `min_hours` since the model's last
  run start a retrain;
- high-confidence errors: at least `min_errors` wrong predictions with confidence above `confidence`
  in the last `lookback_days` start a fine-tune from the production version (where the family can).

Each outcome, firing or not, is recorded in system_events (kind `check`) with its reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import ErrorsCheck, ModelConfig, NewDataCheck
from retrainer.db.records import (
    Observation,
    PredictionKind,
    PredictionRecord,
    PredictionStatus,
    RunStatus,
    TrainingRun,
    Trigger,
)
from retrainer.services import audit

# New rows are counted among the newest ones by id, at most this many times the threshold: the count
# is exact up to there ("at least" beyond) and an hourly check never scans a model's whole history.
COUNT_CAP = 100


def last_run_start(session: Session, model: str) -> datetime | None:
    """When the model's last run that did work (any trigger) started."""
    return session.scalar(sa.select(sa.func.max(TrainingRun.started_at))
                          .where(TrainingRun.model == model, TrainingRun.status != RunStatus.SKIPPED))


def new_samples(session: Session, model: str, since: datetime | None, cap: int) -> int:
    """Labelled rows of MODEL stored after `since` (all when None), counted up to `cap`."""
    newest = (sa.select(Observation.created_at).where(Observation.model == model)
              .order_by(Observation.id.desc()).limit(cap).subquery())
    stmt = sa.select(sa.func.count()).select_from(newest)
    if since is not None:
        stmt = stmt.where(newest.c.created_at > since)
    return session.scalar(stmt) or 0


def check_new_data(session: Session, model: str, cfg: ModelConfig) -> dict[str, Any]:
    """status: retrain_needed | no_retrain_needed | not_applicable; recorded either way."""
    rule: NewDataCheck = cfg.new_data
    now = clock.now()
    last = last_run_start(session, model)
    hours = None if last is None else (now - last).total_seconds() / 3600
    result: dict[str, Any] = {"model": model, "check": "new_data", "min_samples": rule.min_samples,
                              "min_hours": rule.min_hours, "last_run_at": last.isoformat() if last else None,
                              "hours_since_last_run": hours, "checked_at": now.isoformat()}
    if cfg.training.source is not None:
        status, message, count = "not_applicable", "Trains from its own SQL query: new rows are not counted here", None
    else:
        cap = rule.min_samples * COUNT_CAP
        count = new_samples(session, model, last, cap)
        shown = f"{count}" if count < cap else f"at least {count}"
        since = f"since the last run {hours:.1f} h ago" if hours is not None else "(no run yet)"
        if count < rule.min_samples:
            status, message = "no_retrain_needed", f"{shown} new samples {since}, need {rule.min_samples}"
        elif hours is not None and hours < rule.min_hours:
            status, message = "no_retrain_needed", (f"{shown} new samples, but the last run was {hours:.1f} h ago "
                                                    f"(min_hours {rule.min_hours:g})")
        else:
            status, message = "retrain_needed", f"{shown} new samples {since} (>= {rule.min_samples})"
    _record(session, model, "new_data", status, message, new_samples=count, hours_since_last_run=hours)
    return result | {"status": status, "message": message, "new_samples": count}


def wrong(kind: PredictionKind, tolerance: float | None) -> sa.ColumnElement[bool] | None:
    """Which completed predictions of this kind were wrong, or None when the kind needs a tolerance."""
    if kind == PredictionKind.CLASSIFICATION:
        return PredictionRecord.error > 0.5  # its error is 1 when the class was wrong, else 0
    return None if tolerance is None else PredictionRecord.error > tolerance


def check_errors(session: Session, model: str, cfg: ModelConfig, kind: PredictionKind) -> dict[str, Any]:
    """status: retrain_needed (with fine_tune) | no_retrain_needed | suppressed | not_configured; recorded."""
    rule: ErrorsCheck = cfg.errors
    now = clock.now()
    since = now - timedelta(days=rule.lookback_days)
    result: dict[str, Any] = {"model": model, "check": "errors", "confidence": rule.confidence,
                              "min_errors": rule.min_errors, "lookback_days": rule.lookback_days,
                              "checked_at": now.isoformat()}
    is_wrong = wrong(kind, rule.tolerance)
    count = None
    if is_wrong is None:
        status, message = "not_configured", (f"A {kind.value} prediction is wrong beyond a tolerance: set "
                                             f"models.{model}.errors.tolerance to use this check")
    else:
        count = session.scalar(
            sa.select(sa.func.count()).select_from(PredictionRecord)
            .where(PredictionRecord.model == model, PredictionRecord.status == PredictionStatus.COMPLETED,
                   PredictionRecord.predicted_at >= since, PredictionRecord.confidence > rule.confidence, is_wrong)
        ) or 0
        found = (f"{count} wrong prediction(s) with confidence > {rule.confidence:g} in the last "
                 f"{rule.lookback_days:g} days")
        if count < rule.min_errors:
            status, message = "no_retrain_needed", f"{found}, need {rule.min_errors}"
        else:
            status, message = "retrain_needed", f"{found} (>= {rule.min_errors})"
            recent = session.scalar(sa.select(sa.func.max(TrainingRun.started_at)).where(
                TrainingRun.model == model, TrainingRun.trigger == Trigger.ERRORS,
                TrainingRun.started_at >= now - timedelta(hours=rule.cooldown_hours)))
            if recent is not None:
                status, message = "suppressed", (f"{message}, but the run it started at {recent.isoformat()} is "
                                                 f"within the cooldown ({rule.cooldown_hours:g} h)")
    _record(session, model, "errors", status, message, errors=count, confidence=rule.confidence)
    return result | {"status": status, "message": message, "errors": count,
                     "fine_tune": status == "retrain_needed" and rule.fine_tune}


def _record(session: Session, model: str, check: str, status: str, message: str, **figures: Any) -> None:
    audit.record(session, "check", f"{model}: {check.replace('_', ' ')}: {message}", model=model, check=check,
                 status=status, **figures)
