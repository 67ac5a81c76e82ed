"""Read models in the reference response shapes, shared by the CLI's --json output and the API.

The shapes are stable: keys are only ever added. Timestamps are ISO 8601 UTC strings.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import (
    ModelEvaluation,
    ModelVersion,
    RequestStatus,
    RetrainRequest,
    SystemEvent,
    TrainingRun,
)
from retrainer.models.base import family_class, live_check
from retrainer.services import (
    accuracy,
    controls,
    drift_check,
    ledger,
    notifications,
    registry,
    retrain_requests,
    triggers,
)
from retrainer.services.errors import NotFound


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def fmt(value: float | None) -> str:
    """A metric for a human table: 4 decimals, or a dash when unknown."""
    return "–" if value is None else f"{value:.4f}"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}%"


def version_dict(v: ModelVersion) -> dict[str, Any]:
    return {
        "version_id": v.version_id,
        "model_type": v.model,
        "family": v.family,
        "algorithm": v.algorithm,
        "trained_at": _iso(v.trained_at),
        "promoted_at": _iso(v.promoted_at),
        "status": v.status.value,
        "is_production": v.is_production,
        "num_training_samples": v.num_training_samples,
        "training_duration_seconds": round(v.training_duration_seconds, 3),
        "metrics": v.metrics,
        "artifact_uri": v.artifact_uri,
        "artifact_sha256": v.artifact_sha256,
        "parent_version_id": v.parent_version_id,
        "previous_production_id": v.previous_production_id,
        "refit": v.refit,  # refit on every row after the decision (promotion.deploy: refit)
        "probation": v.probation,  # watching | passed | rolled_back | superseded (after a promotion)
        "probation_ended_at": _iso(v.probation_ended_at),
    }


def run_dict(r: TrainingRun) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "model": r.model,
        "model_version_id": r.version_id,
        "trigger": r.trigger.value,
        "status": r.status.value,
        "outcome": r.outcome,
        "started_at": _iso(r.started_at),
        "completed_at": _iso(r.completed_at),
        "duration_seconds": None if r.duration_seconds is None else round(r.duration_seconds, 3),
        "dataset_size": r.dataset_size,
        "train_size": r.train_size,
        "holdout_size": r.holdout_size,
        "metrics": r.metrics,
        "old_metrics": r.old_metrics,
        "promoted_to_production": r.promoted_to_production,
        "improvement_percentage": r.improvement_percentage,
        "promotion_reason": r.promotion_reason,
        "error_message": r.error_message,
        "celery_task_id": r.celery_task_id,
        "request_id": r.request_id,
        "fine_tune": r.fine_tune,
        "drift_report_id": r.drift_report_id,
        "train_since": r.train_since.isoformat() if r.train_since else None,  # rows from here on (since_change)
        "data_report": r.data_report,
        "decision": r.decision,  # the policy's record: each rule, its threshold, value and verdict (None: older runs)
    }


def evaluation_dict(e: ModelEvaluation) -> dict[str, Any]:
    return {
        "model_version_id": e.version_id,
        "run_id": e.run_id,
        "role": e.role,
        "holdout": {"start": _iso(e.holdout_start), "end": _iso(e.holdout_end), "rows": e.holdout_rows,
                    "hash": e.holdout_hash},
        "metrics": e.metrics,
        "primary_metric": e.primary_metric,
        "overall_score": e.overall_score,
        "champion_score": e.champion_score,
        "test": e.test,  # a candidate's paired test against the champion (or baseline) on these rows
        "evaluated_at": _iso(e.evaluated_at),
    }


def versions(session: Session, model: str, limit: int = 50) -> dict[str, Any]:
    rows = [version_dict(v) for v in registry.versions(session, model, limit)]
    return {"versions": rows, "count": len(rows)}


def history(session: Session, model: str, limit: int = 20) -> dict[str, Any]:
    runs = session.scalars(
        sa.select(TrainingRun).where(TrainingRun.model == model)
        .order_by(TrainingRun.started_at.desc(), TrainingRun.run_id.desc()).limit(limit)
    ).all()
    return {"training_runs": [run_dict(r) for r in runs], "count": len(runs)}


def evaluations(session: Session, run_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        sa.select(ModelEvaluation).where(ModelEvaluation.run_id == run_id).order_by(ModelEvaluation.id)
    ).all()
    return [evaluation_dict(e) for e in rows]


def events(session: Session, model: str | None = None, kinds: tuple[str, ...] = (), limit: int = 50) -> list[dict[str, Any]]:
    query = sa.select(SystemEvent).order_by(SystemEvent.id.desc()).limit(limit)
    if model:
        query = query.where(SystemEvent.model == model)
    if kinds:
        query = query.where(SystemEvent.kind.in_(kinds))
    return [
        {"id": e.id, "model": e.model, "kind": e.kind, "message": e.message, "created_at": _iso(e.created_at)}
        for e in reversed(session.scalars(query).all())
    ]


def status(session: Session, settings: Settings) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, cfg in settings.models.items():
        current = registry.production(session, name)
        metric, threshold = live_check(cfg.family, cfg.accuracy.metric, cfg.accuracy.threshold)
        live = accuracy.live_accuracy(session, name, cfg.accuracy.lookback_days,
                                      current.version_id if current else None,
                                      kind=family_class(cfg.family).metric_spec.live)
        last = session.scalar(
            sa.select(TrainingRun).where(TrainingRun.model == name).order_by(TrainingRun.started_at.desc()).limit(1)
        )
        pending = session.scalar(
            sa.select(sa.func.count()).select_from(RetrainRequest)
            .where(RetrainRequest.model == name, RetrainRequest.status == RequestStatus.PENDING)
        )
        models[name] = {
            "family": cfg.family,
            "production": version_dict(current) if current else None,
            "live_accuracy": live.as_dict() | {"kind": live.kind.value, "lookback_days": cfg.accuracy.lookback_days,
                                               "metric": metric, "threshold": threshold},
            "second_target": accuracy.second_target(session, name, cfg.accuracy,
                                                    current.version_id if current else None),
            "live_segments": {key: {value: part.as_dict() for value, part in accuracy.breakdown(
                session, name, key, cfg.accuracy.lookback_days, kind=live.kind,
                version_id=current.version_id if current else None).items()} for key in cfg.accuracy.segments},
            "last_run": run_dict(last) if last else None,
            "pending_requests": pending,
            "state": controls.state(session, name),
            "budget": {"max_runs": cfg.budget.max_runs, "per_hours": cfg.budget.per_hours,
                       "used": controls.automatic_runs(session, name, cfg.budget.per_hours)},
            "triggers": latest_checks(session, name),
            "drift": drift_check.summary(session, name),  # the latest drift report's verdict
            "suppressed": _latest(session, name, "suppressed", SUPPRESSED_HOURS),
            "notifications_failed": _latest(session, name, "notification_failed", FAILED_NOTIFICATION_HOURS),
            "alert": _latest(session, name, "alert", FAILED_NOTIFICATION_HOURS),
        }
    return {"models": models, "checked_at": clock.now().isoformat()}


CHECKS = tuple(triggers.CHECKS)  # every check a trigger or beat runs, probation included
SUPPRESSED_HOURS = 24  # `status` shows the latest suppression, failed notification and alert this recent
FAILED_NOTIFICATION_HOURS = 7 * 24


def latest_checks(session: Session, model: str, scan: int = 200) -> dict[str, Any]:
    """Each trigger's latest recorded outcome (system_events kind `check`): status, message and when."""
    rows = session.scalars(
        sa.select(SystemEvent).where(SystemEvent.model == model, SystemEvent.kind == "check")
        .order_by(SystemEvent.id.desc()).limit(scan)
    )
    out: dict[str, Any] = dict.fromkeys(CHECKS)
    for event in rows:
        check = event.payload.get("check")
        if check in out and out[check] is None:
            out[check] = {"status": event.payload.get("status"), "message": event.message,
                          "at": _iso(event.created_at)}
    return out


def _latest(session: Session, model: str, kind: str, hours: float) -> dict[str, Any] | None:
    """The model's latest system event of `kind` within `hours`, and how many there were."""
    since = clock.now() - timedelta(hours=hours)
    where = (SystemEvent.model == model, SystemEvent.kind == kind, SystemEvent.created_at >= since)
    count = session.scalar(sa.select(sa.func.count()).select_from(SystemEvent).where(*where)) or 0
    if not count:
        return None
    event = session.scalar(sa.select(SystemEvent).where(*where).order_by(SystemEvent.id.desc()).limit(1))
    return {"count": count, "message": event.message, "at": _iso(event.created_at),
            "repeats": event.payload.get("repeats")}


# --- decisions: the ledger, one run's decision, two versions side by side ---------------------------

def ledger_history(session: Session, model: str, limit: int = 50) -> dict[str, Any]:
    rows = [ledger.entry_dict(e) for e in ledger.history(session, model, limit)]
    return {"model": model, "ledger": rows, "count": len(rows)}


def _run(session: Session, run_id: str) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"training run {run_id!r} not found")
    return run


def explain(session: Session, run_id: str) -> dict[str, Any]:
    """Why a run ended as it did: its decision record (older runs: the reason), what asked for it, the
    holdout, both evaluations with the paired test, and the ledger entry it caused."""
    run = _run(session, run_id)
    request = session.get(RetrainRequest, run.request_id) if run.request_id else None
    evaluations_ = evaluations(session, run_id)
    holdout = evaluations_[0]["holdout"] if evaluations_ else None
    entry = ledger.for_run(session, run_id)
    return {
        "run": run_dict(run),
        "trigger": notifications.trigger_text(session, run),
        "request": retrain_requests.describe(request) if request else None,
        "decision": run.decision,
        "reason": run.promotion_reason or run.error_message,
        "holdout": holdout,
        "evaluations": evaluations_,
        "ledger": ledger.entry_dict(entry) if entry else None,
    }


def logs(session: Session, run_id: str) -> dict[str, Any]:
    run = _run(session, run_id)
    return {"run_id": run.run_id, "model": run.model, "status": run.status.value, "logs": run.logs}


class NotComparable(ValueError):
    """Two versions that were never scored on the same holdout rows."""


def compare(session: Session, a: str, b: str) -> dict[str, Any]:
    """Versions `a` and `b` on the same holdout rows (equal hash), newest such scoring: their metrics
    side by side, which is better on each, and the paired test of the run that scored them."""
    va, vb = registry.get(session, a), registry.get(session, b)
    if va.model != vb.model:
        raise NotComparable(f"{a} is a version of {va.model!r} and {b} of {vb.model!r}: not comparable")
    if a == b:
        raise NotComparable(f"{a} compared with itself")
    scored = {v: list(session.scalars(sa.select(ModelEvaluation).where(ModelEvaluation.version_id == v)
                                      .order_by(ModelEvaluation.evaluated_at.desc(), ModelEvaluation.id.desc())))
              for v in (a, b)}
    for v, rows in scored.items():
        if not rows:
            raise NotComparable(f"{v} was never scored on a holdout: not comparable")
    pairs = [(ea, eb) for ea in scored[a] for eb in scored[b] if ea.holdout_hash == eb.holdout_hash]
    if not pairs:
        ha, hb = scored[a][0].holdout_hash, scored[b][0].holdout_hash
        raise NotComparable(f"{a} and {b} were scored on different holdouts ({ha[:12]} vs {hb[:12]}): not comparable")
    # One run scoring both (its paired test is about exactly these two) before two runs that met the same rows
    ea, eb = max(pairs, key=lambda p: (p[0].run_id == p[1].run_id, max(p[0].evaluated_at, p[1].evaluated_at)))
    spec = family_class(va.family).metric_spec
    metrics = {}
    for k in [k for k in ea.metrics if k in eb.metrics]:
        x, y = ea.metrics[k], eb.metrics[k]
        better = None
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x != y:
            better = (b if y > x else a) if spec.better_is_higher(k) else (a if y > x else b)
        metrics[k] = {"a": x, "b": y, "better": better}
    # The test stored on a candidate's row is candidate vs that run's champion: it is about these two
    # only when both were scored by that one run.
    test = None
    if ea.run_id == eb.run_id:
        cand = ea if ea.role == "candidate" else eb if eb.role == "candidate" else None
        if cand is not None and cand.test is not None:
            test = cand.test | {"candidate": cand.version_id,
                                "reference": (eb if cand is ea else ea).version_id}
    return {
        "model": va.model, "a": evaluation_dict(ea), "b": evaluation_dict(eb),
        "same_run": ea.run_id == eb.run_id, "holdout": evaluation_dict(ea)["holdout"],
        "primary_metric": ea.primary_metric, "metrics": metrics, "test": test,
    }
