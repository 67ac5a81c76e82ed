"""What GET /metrics shows, read from the database at each scrape: every figure is an aggregate query
or one indexed row per configured model, so a scrape costs the same whatever the history holds, and
every API process answers the same (nothing is counted in memory).

- training runs by model, status and trigger: the finished ones (completed, failed, skipped: a status
  no run leaves again, so their counts only grow) apart from those queued or running now;
- retrain durations (training_runs.duration_seconds) as cumulative histogram buckets per model;
- decisions by outcome (retrained, kept, insufficient_data, no_new_data, data_check_failed, error ...);
- per configured model: the production version, its live metrics over the accuracy check's lookback
  (services/accuracy.py, from the hourly rollup), the latest drift report's share of drifted features
  and the retrain requests pending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import DriftReport, ModelVersion, RequestStatus, RetrainRequest, RunStatus, TrainingRun
from retrainer.models.base import family_class, live_check
from retrainer.services import accuracy

# Upper bounds (seconds) of the duration histogram: a retrain of a small model takes seconds, a large
# one tens of minutes (the default hard time limit is 30 min).
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.SKIPPED)


@dataclass(frozen=True)
class Durations:
    buckets: list[tuple[float, int]]  # (upper bound, runs that took at most that long): cumulative
    count: int
    total_seconds: float


@dataclass(frozen=True)
class Production:
    version_id: str
    number: int
    promoted_at: datetime | None


@dataclass(frozen=True)
class Live:
    version_id: str | None  # the production version measured; None: no production version, all records
    metric: str  # the accuracy check's metric
    threshold: float | None
    lookback_days: int
    count: int
    metrics: dict[str, float | None]  # every live metric of the model's kind; None: not measurable


@dataclass(frozen=True)
class Drift:
    drifted_share: float | None
    drifted: bool
    share_threshold: float
    checked_at: datetime


@dataclass
class Snapshot:
    runs: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (model, status, trigger), finished
    active_runs: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, status): queued, running
    durations: dict[str, Durations] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, outcome)
    production: dict[str, Production] = field(default_factory=dict)  # configured models that have one
    live: dict[str, Live] = field(default_factory=dict)
    drift: dict[str, Drift] = field(default_factory=dict)  # configured models with a drift report
    pending_requests: dict[str, int] = field(default_factory=dict)  # every configured model


def runs(session: Session) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], int]]:
    """Finished runs per (model, status, trigger), and queued or running ones per (model, status)."""
    finished: dict[tuple[str, str, str], int] = {}
    active: dict[tuple[str, str], int] = {}
    rows = session.execute(sa.select(TrainingRun.model, TrainingRun.status, TrainingRun.trigger, sa.func.count())
                           .group_by(TrainingRun.model, TrainingRun.status, TrainingRun.trigger)).all()
    for model, status, trigger, n in rows:
        if status in FINISHED:
            finished[(model, status.value, trigger.value)] = int(n)
        else:
            active[(model, status.value)] = active.get((model, status.value), 0) + int(n)
    return finished, active


def durations(session: Session, bounds: tuple[float, ...] = DURATION_BUCKETS) -> dict[str, Durations]:
    """Each model's runs that recorded a duration (the finished ones), counted under every bound."""
    d = TrainingRun.duration_seconds
    under = [sa.func.sum(sa.case((d <= b, 1), else_=0)) for b in bounds]
    rows = session.execute(sa.select(TrainingRun.model, sa.func.count(), sa.func.sum(d), *under)
                           .where(d.is_not(None)).group_by(TrainingRun.model)).all()
    return {model: Durations(list(zip(bounds, (int(c or 0) for c in counts), strict=True)), int(n), float(total or 0))
            for model, n, total, *counts in rows}


def decisions(session: Session) -> dict[tuple[str, str], int]:
    rows = session.execute(sa.select(TrainingRun.model, TrainingRun.outcome, sa.func.count())
                           .where(TrainingRun.outcome.is_not(None))
                           .group_by(TrainingRun.model, TrainingRun.outcome)).all()
    return {(model, outcome): int(n) for model, outcome, n in rows}


def production(session: Session, models: list[str]) -> dict[str, Production]:
    """The production row of each model (the partial unique index: at most one each)."""
    rows = session.execute(sa.select(ModelVersion.model, ModelVersion.version_id, ModelVersion.number,
                                     ModelVersion.promoted_at)
                           .where(ModelVersion.is_production.is_(True), ModelVersion.model.in_(models))).all()
    return {model: Production(version_id, number, clock.as_utc(promoted) if promoted else None)
            for model, version_id, number, promoted in rows}


def live(session: Session, settings: Settings, current: dict[str, Production]) -> dict[str, Live]:
    """Each configured model's live metrics as its accuracy check measures them: the production
    version's outcomes (every version's when there is none) over the check's lookback window."""
    found = {}
    now = clock.now()
    for name, cfg in settings.models.items():
        version = current[name].version_id if name in current else None
        metric, threshold = live_check(cfg.family, cfg.accuracy.metric, cfg.accuracy.threshold)
        acc = accuracy.live_accuracy(session, name, cfg.accuracy.lookback_days, version, until=now,
                                     kind=family_class(cfg.family).metric_spec.live)
        found[name] = Live(version, metric, threshold, cfg.accuracy.lookback_days, acc.count, dict(acc.metrics))
    return found


def drift(session: Session, models: list[str]) -> dict[str, Drift]:
    """The latest drift report of each model (ix_drift_reports_model_checked: one index probe each)."""
    found = {}
    for model in models:
        row = session.execute(sa.select(DriftReport.drifted_share, DriftReport.drifted, DriftReport.share_threshold,
                                        DriftReport.checked_at)
                              .where(DriftReport.model == model)
                              .order_by(DriftReport.checked_at.desc(), DriftReport.id.desc()).limit(1)).first()
        if row is not None:
            share, drifted, threshold, checked_at = row
            found[model] = Drift(share, bool(drifted), float(threshold), clock.as_utc(checked_at))
    return found


def pending_requests(session: Session, models: list[str]) -> dict[str, int]:
    rows = session.execute(sa.select(RetrainRequest.model, sa.func.count())
                           .where(RetrainRequest.status == RequestStatus.PENDING, RetrainRequest.model.in_(models))
                           .group_by(RetrainRequest.model)).all()
    counts = {model: int(n) for model, n in rows}
    return {model: counts.get(model, 0) for model in models}


def take(session: Session, settings: Settings) -> Snapshot:
    models = list(settings.models)
    finished, active = runs(session)
    current = production(session, models)
    return Snapshot(runs=finished, active_runs=active, durations=durations(session), decisions=decisions(session),
                    production=current, live=live(session, settings, current), drift=drift(session, models),
                    pending_requests=pending_requests(session, models))
