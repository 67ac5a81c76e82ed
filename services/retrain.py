"""The retrain pipeline, steps 1-8 of the design:

1 take the model's run lock (a 'running' training_runs row, fenced by run id; a duplicate: skipped)
2 load the newest labelled rows and validate them
3 time-ordered split: train < cutoff <= holdout
4 fit the candidate
5 score candidate and production on the same holdout rows
6 decide with the promotion policy
7 one transaction: ModelVersion + TrainingRun + ModelEvaluations + production swap + audit
8 the caller publishes the decision after commit (tasks enqueue the notification)

The result has the reference shapes: status is one of retrained, kept, insufficient_data, skipped,
error, with metrics, old_metrics and improvement.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.base import LABEL, ArtifactError, DataError, Family, Metrics, load_family
from retrainer import clock
from retrainer.config import ModelConfig, Settings, UnknownModel
from retrainer.db.records import (
    ModelEvaluation,
    ModelVersion,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    TrainingRun,
    Trigger,
)
from services import artifacts, audit, dataset, policy, registry

LEASE_MARGIN = timedelta(minutes=5)
SAMPLE_ROWS = 20


class LostLock(RuntimeError):
    """Our run's lease expired and another run took the lock: this run must not write its result."""


def new_run_id() -> str:
    return f"run_{clock.now():%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def _finish(session: Session, run_id: str, **values: Any) -> None:
    """Fenced update: only while our run still holds the lock."""
    now = clock.now()
    run = session.get(TrainingRun, run_id)
    duration = (now - run.started_at).total_seconds() if run else None
    done = session.execute(
        sa.update(TrainingRun)
        .where(TrainingRun.run_id == run_id, TrainingRun.status == RunStatus.RUNNING)
        .values(completed_at=now, duration_seconds=duration, **values)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        raise LostLock(f"run {run_id} lost its lock (lease expired); its result is discarded")


def _close_request(session: Session, request_id: int | None, status: RequestStatus) -> None:
    if request_id is not None:
        session.execute(
            sa.update(RetrainRequest)
            .where(RetrainRequest.id == request_id)
            .values(status=status, completed_at=clock.now())
        )


@dataclass
class _Lock:
    run_id: str | None
    skipped: dict[str, Any] | None = None


def acquire(session: Session, model: str, cfg: ModelConfig, trigger: Trigger, request_id: int | None,
            task_id: str | None) -> _Lock:
    now = clock.now()
    # A run whose worker died never releases the lock: once its lease is over it is marked failed.
    expired = session.execute(
        sa.update(TrainingRun)
        .where(TrainingRun.model == model, TrainingRun.status == RunStatus.RUNNING, TrainingRun.lease_expires_at < now)
        .values(status=RunStatus.FAILED, outcome="error", completed_at=now, error_message="lease expired: worker lost")
        .execution_options(synchronize_session=False)
    )
    if expired.rowcount:
        audit.record(session, "lock_expired", f"{model}: a stale run lock expired and was released", model=model)
    if request_id is not None:
        request = session.get(RetrainRequest, request_id)
        if request is None or request.status != RequestStatus.PENDING:
            state = "missing" if request is None else request.status.value
            session.commit()
            return _Lock(None, {"status": "skipped", "model": model,
                                "message": f"retrain request {request_id} is {state}: already handled"})
    run_id = new_run_id()
    lease = now + timedelta(seconds=cfg.training.time_limit_seconds) + LEASE_MARGIN
    try:
        with session.begin_nested():
            session.add(TrainingRun(
                run_id=run_id, model=model, trigger=trigger, status=RunStatus.RUNNING, started_at=now,
                lease_expires_at=lease, celery_task_id=task_id, request_id=request_id,
            ))
    except IntegrityError:
        holder = session.scalar(
            sa.select(TrainingRun.run_id).where(TrainingRun.model == model, TrainingRun.status == RunStatus.RUNNING)
        )
        message = f"another run ({holder}) holds the lock for {model!r}"
        session.add(TrainingRun(
            run_id=run_id, model=model, trigger=trigger, status=RunStatus.SKIPPED, outcome="skipped",
            started_at=now, completed_at=now, error_message=message, celery_task_id=task_id, request_id=request_id,
        ))
        session.commit()
        return _Lock(None, {"status": "skipped", "model": model, "run_id": run_id, "holder": holder, "message": message})
    if request_id is not None:
        session.execute(
            sa.update(RetrainRequest).where(RetrainRequest.id == request_id)
            .values(status=RequestStatus.RUNNING, started_at=now, run_id=run_id)
        )
    audit.record(session, "trigger", f"{model}: retrain started ({trigger.value})", model=model, run_id=run_id,
                 trigger=trigger.value, request_id=request_id)
    session.commit()
    return _Lock(run_id)


def _score(estimator: Family, holdout: Any) -> tuple[Metrics, np.ndarray]:
    predicted = estimator.predict(dataset.features_only(holdout.drop(columns=[LABEL])))
    return estimator.evaluate(holdout[LABEL].to_numpy(), predicted), predicted


def _result_metrics(m: Metrics | None, trained_at: str | None = None) -> dict[str, Any] | None:
    if m is None:
        return None
    out = {f"test_{k}": v for k, v in m.values.items()}
    return out | ({"trained_at": trained_at} if trained_at else {})


def _improvement(cand: Metrics, champ: Metrics | None, pct: float | None) -> dict[str, Any] | None:
    if champ is None:
        return None
    diff = {f"{k}_improvement": (champ.values[k] - cand.values[k]) for k in ("mae", "rmse") if k in cand.values}
    if "r2" in cand.values:
        diff["r2_improvement"] = cand.values["r2"] - champ.values["r2"]
    return diff | {"percentage": pct, "primary": cand.primary}


def retrain(
    session: Session, settings: Settings, model: str, trigger: Trigger | str = Trigger.MANUAL,
    request_id: int | None = None, task_id: str | None = None,
) -> dict[str, Any]:
    trigger = Trigger(trigger)
    started = clock.now()
    base = {"model": model, "trigger": trigger.value, "checked_at": started.isoformat()}
    try:
        cfg = settings.model(model)
    except UnknownModel as exc:
        return base | {"status": "error", "message": str(exc)}
    lock = acquire(session, model, cfg, trigger, request_id, task_id)
    if lock.run_id is None:
        return base | (lock.skipped or {})
    run_id = lock.run_id
    base["run_id"] = run_id
    written: list[Path] = []  # the candidate's artifact, filled in as soon as the file exists
    try:
        result = _train_and_decide(session, settings, cfg, model, run_id, request_id, written)
        session.commit()
        return base | result
    except Exception as exc:  # any failure: nothing half-written, the run says why, the worker goes on
        session.rollback()
        for path in written:  # a failure after the write (rows, swap, lost lock) must not leave the file
            artifacts.remove(path)
        message = f"{type(exc).__name__}: {exc}"
        try:
            _finish(session, run_id, status=RunStatus.FAILED, outcome="error", error_message=message[:2000])
            _close_request(session, request_id, RequestStatus.FAILED)
            audit.record(session, "decision", f"{model}: retrain {run_id} failed: {message[:500]}", model=model,
                         run_id=run_id, outcome="error")
            session.commit()
        except LostLock:
            session.rollback()
        return base | {"status": "error", "message": message}


def _train_and_decide(
    session: Session, settings: Settings, cfg: ModelConfig, model: str, run_id: str, request_id: int | None,
    written: list[Path],
) -> dict[str, Any]:
    # 2 load + validate
    raw = dataset.load(session, model, cfg.training.max_rows)
    valid = dataset.validate(raw, cfg.features)
    frame = valid.frame
    if len(frame) < cfg.training.min_samples:
        message = f"Need at least {cfg.training.min_samples} samples for retraining, got {len(frame)}"
        if valid.dropped:
            message += f" ({valid.dropped} invalid rows dropped: {valid.problems})"
        _finish(session, run_id, status=RunStatus.SKIPPED, outcome="insufficient_data", dataset_size=len(frame),
                error_message=message)
        _close_request(session, request_id, RequestStatus.COMPLETED)
        audit.record(session, "decision", f"{model}: {message}", model=model, run_id=run_id, outcome="insufficient_data")
        return {"status": "insufficient_data", "count": len(frame), "message": message}

    champion = registry.production(session, model)
    # No transaction stays open while fitting (on SQLite it would hold the write lock); the
    # champion read here is re-checked by the compare-and-swap at commit.
    session.commit()

    # 3 split, 4 fit
    train, holdout_frame, holdout = dataset.split(frame, cfg.training.test_fraction)
    estimator = load_family(cfg.family, cfg.params)
    t0 = time.perf_counter()
    estimator.fit(dataset.features_only(train))
    fit_seconds = time.perf_counter() - t0

    # 5 score both on the same rows
    cand_metrics, cand_pred = _score(estimator, holdout_frame)
    champ_metrics = champ_pred = problem = None
    if champion is not None:
        try:
            champ_metrics, champ_pred = _score(registry.load_estimator(champion), holdout_frame)
        except (ArtifactError, DataError) as exc:
            problem = str(exc)

    # 6 decide
    decision = policy.decide(cand_metrics, champ_metrics, cfg.promotion, champion.version_id if champion else None, problem)

    # 7 artifact first (atomic rename), then every row and the pointer in this one transaction
    path, checksum = artifacts.write(estimator, Path(settings.artifact_dir) / model, run_id)
    written.append(path)
    number = registry.next_number(session, model)
    version_id = f"{model}-v{number}"
    now = clock.now()
    session.add(ModelVersion(
        version_id=version_id, model=model, number=number, family=cfg.family, algorithm=estimator.algorithm,
        trained_at=now, num_training_samples=len(train), training_duration_seconds=fit_seconds,
        hyperparameters=estimator.get_params(), metrics=cand_metrics.values, artifact_uri=str(path),
        artifact_sha256=checksum, training_window_start=train["event_time"].iloc[0],
        training_window_end=train["event_time"].iloc[-1], library_versions=estimator.library_versions(),
        parent_version_id=champion.version_id if champion else None,
    ))
    session.flush()
    holdout_cols = dict(holdout_start=holdout.start, holdout_end=holdout.end, holdout_rows=holdout.rows,
                        holdout_hash=holdout.hash, primary_metric=cand_metrics.primary)
    session.add(ModelEvaluation(
        version_id=version_id, run_id=run_id, role="candidate", metrics=cand_metrics.values,
        overall_score=cand_metrics.score, champion_score=champ_metrics.score if champ_metrics else None,
        predictions_sample=_sample(holdout_frame, cand_pred), **holdout_cols,
    ))
    if champion is not None and champ_metrics is not None:
        session.add(ModelEvaluation(
            version_id=champion.version_id, run_id=run_id, role="champion", metrics=champ_metrics.values,
            overall_score=champ_metrics.score, champion_score=None,
            predictions_sample=_sample(holdout_frame, champ_pred), **holdout_cols,
        ))
    if decision.promote:
        registry.swap_production(session, model, version_id, champion.version_id if champion else None)
        registry.archive_old(session, model, cfg.keep_versions)
    outcome = "retrained" if decision.promote else "kept"
    _finish(
        session, run_id, status=RunStatus.COMPLETED, outcome=outcome, version_id=version_id,
        dataset_size=len(frame), train_size=len(train), holdout_size=holdout.rows,
        metrics=cand_metrics.values, old_metrics=champ_metrics.values if champ_metrics else None,
        promoted_to_production=decision.promote, improvement_percentage=decision.improvement_pct,
        promotion_reason=decision.reason,
    )
    _close_request(session, request_id, RequestStatus.COMPLETED)
    audit.record(
        session, "decision", f"{model}: {version_id} {'promoted' if decision.promote else 'kept'}: {decision.reason}",
        model=model, run_id=run_id, version_id=version_id, outcome=outcome, champion=champion.version_id if champion else None,
        holdout_hash=holdout.hash,
    )
    result = {
        "status": outcome,
        "version_id": version_id,
        "production_version": version_id if decision.promote else (champion.version_id if champion else None),
        "champion_version": champion.version_id if champion else None,
        "samples": len(train),
        "holdout": {"rows": holdout.rows, "start": holdout.start.isoformat(), "end": holdout.end.isoformat(),
                    "hash": holdout.hash},
        "dropped_rows": valid.dropped,
        "metrics": _result_metrics(cand_metrics, now.isoformat()),
        "old_metrics": _result_metrics(champ_metrics),
        "improvement": _improvement(cand_metrics, champ_metrics, decision.improvement_pct),
        "promoted": decision.promote,
        "reason": decision.reason,
        "retrained_at": now.isoformat(),
    }
    return result


def _sample(holdout: Any, predicted: np.ndarray) -> dict[str, Any]:
    n = min(SAMPLE_ROWS, len(holdout))
    return {"rows": [
        {"row_id": int(r), "actual": float(a), "predicted": float(p)}
        for r, a, p in zip(holdout["row_id"][:n], holdout[LABEL][:n], predicted[:n], strict=True)
    ]}
