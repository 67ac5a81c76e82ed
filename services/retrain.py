"""The retrain pipeline, steps 1-8 of the design:

1 take the model's run lock (a 'running' training_runs row, fenced by run id; a duplicate: skipped)
2 load the newest labelled rows and validate them
3 time-ordered split: train before holdout; the holdout after the production version's training rows
  then the data checks (services/data_checks.py): a failing one ends the run, its report on the run
4 fit the candidate
5 score candidate and production on the same holdout rows
6 decide with the promotion policy
7 one transaction: ModelVersion + TrainingRun + ModelEvaluations + production swap + audit
8 the caller publishes the decision after commit (tasks enqueue the notification)

The result has the reference shapes: status is one of retrained, kept, insufficient_data, skipped,
error, with metrics, old_metrics and improvement; an automatic run without enough new rows ends
no_new_data before fitting (Training.min_new_rows).
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import ModelConfig, Settings, UnknownModel
from retrainer.db import TRANSIENT_ERRORS
from retrainer.db.records import (
    FeatureProfile,
    ModelEvaluation,
    ModelVersion,
    RequestStatus,
    RunStatus,
    TrainingRun,
    Trigger,
)
from retrainer.models.base import ArtifactError, DataError, Family, Metrics, Prediction, family_class, load_family
from retrainer.services import (
    artifacts,
    audit,
    data_checks,
    dataset,
    drift,
    guards,
    policy,
    registry,
    retrain_requests,
    run_lock,
    schema,
    significance,
    sources,
)

SAMPLE_ROWS = 20
log = logging.getLogger(__name__)


def _score(estimator: Family, holdout: pd.DataFrame, primary: str | None) -> tuple[Metrics, Prediction]:
    """The estimator on the holdout rows, its metrics with the model's primary metric."""
    time = holdout[dataset.TIME] if estimator.needs_time else None
    predicted = estimator.predict(dataset.features(holdout), time=time)
    metrics = estimator.evaluate(holdout[dataset.LABEL], predicted)
    return Metrics.of(metrics.values, estimator.metric_spec, primary), predicted


def _result_metrics(m: Metrics | None, rows: int, trained_at: str | None = None) -> dict[str, Any] | None:
    if m is None:
        return None
    out = {f"test_{k}": v for k, v in m.storable().items()} | {"test_count": rows}
    return out | ({"trained_at": trained_at} if trained_at else {})


def _improvement(cand: Metrics, champ: Metrics | None, pct: float | None, spec: Any) -> dict[str, Any] | None:
    """Per metric, how much better the candidate is (+ = better, in that metric's own direction)."""
    if champ is None:
        return None
    diff = {
        f"{k}_improvement": _finite((cand.values[k] - champ.values[k]) * (1 if spec.better_is_higher(k) else -1))
        for k in cand.values if k in champ.values
    }
    return diff | {"percentage": None if pct is None else _finite(pct), "primary": cand.primary}


def retrain(
    session: Session, settings: Settings, model: str, trigger: Trigger | str = Trigger.MANUAL,
    request_id: int | None = None, task_id: str | None = None, attempt: int = 0,
) -> dict[str, Any]:
    """Run one retrain. A transient database error propagates (the task retries it, and the retry
    takes over this run); every other failure is recorded on the run and returned as status error."""
    trigger = Trigger(trigger)
    started = clock.now()
    base = {"model": model, "trigger": trigger.value, "checked_at": started.isoformat()}
    try:
        cfg = settings.model(model)
    except UnknownModel as exc:
        return base | {"status": "error", "message": str(exc)}
    claimed = run_lock.claim(session, model, trigger, request_id, task_id, attempt, settings.recovery)
    if claimed.run_id is None:
        return base | (claimed.skipped or {})
    run_id, request_id = claimed.run_id, claimed.request_id
    base |= {"run_id": run_id, "request_id": request_id}
    written: list[Path] = []  # the candidate's artifact, filled in as soon as the file exists
    try:
        with run_lock.Heartbeat(session.get_bind(), run_id, timedelta(seconds=settings.recovery.lease_seconds)) as heartbeat:
            result = _train_and_decide(session, settings, cfg, model, run_id, request_id, written, heartbeat,
                                       claimed.fine_tune, trigger)
        session.commit()
        return base | result
    except TRANSIENT_ERRORS:
        session.rollback()
        _remove(written)
        raise
    except Exception as exc:  # nothing half-written: the run says why, the worker goes on
        session.rollback()
        _remove(written)  # a failure after the write (rows, swap, lost lock) must not leave the file
        message = f"{type(exc).__name__}: {exc}"
        try:
            run_lock.finish(session, run_id, status=RunStatus.FAILED, outcome="error", error_message=message[:2000],
                            source=_source(cfg))
            retrain_requests.close(session, request_id, RequestStatus.FAILED, message[:2000])
            audit.record(session, "decision", f"{model}: retrain {run_id} failed: {message[:500]}", model=model,
                         run_id=run_id, outcome="error")
            session.commit()
        except run_lock.LostLock:
            session.rollback()
        return base | {"status": "error", "message": message}


def _check_data(session: Session, cfg: ModelConfig, run_id: str, raw: pd.DataFrame, valid: dataset.Validated,
                train: pd.DataFrame, holdout: pd.DataFrame,
                production: schema.FeatureSchema | None) -> data_checks.DataReport | None:
    """The data checks' report, None when they are off. A passing report is on the run at once (its
    own commit), so a run that fails later, fitting or at the swap, still shows what its data was."""
    if not cfg.data_checks.enabled:
        return None
    family = load_family(cfg.family, cfg.params)  # the instance: a classifier's task is configured
    report = data_checks.run(raw, valid, train, holdout, production, family.task, cfg.data_checks,
                             needs_time=family.needs_time)
    if report.ok:
        done = session.execute(
            sa.update(TrainingRun).where(TrainingRun.run_id == run_id, TrainingRun.status == RunStatus.RUNNING)
            .values(data_report=report.to_json()).execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:
            raise run_lock.LostLock(f"run {run_id} lost its lock (lease expired); its result is discarded")
        session.commit()
    return report


def _data_check_failed(session: Session, cfg: ModelConfig, model: str, run_id: str, request_id: int | None,
                       report: data_checks.DataReport, rows: int, unused: dict[str, int]) -> dict[str, Any]:
    """End a run whose data failed its checks: nothing fitted, nothing promoted, the report on the run.
    When only the split is too small, more data fixes it: that is insufficient_data, as too few rows are."""
    problems, data_report = report.summary(), report.to_json()
    if report.too_few_rows:
        message = f"too few rows to train and judge a candidate: {problems}"
        run_lock.finish(session, run_id, status=RunStatus.SKIPPED, outcome="insufficient_data", dataset_size=rows,
                        error_message=message[:2000], data_report=data_report, source=_source(cfg))
        retrain_requests.close(session, request_id, RequestStatus.COMPLETED)
        audit.record(session, "decision", f"{model}: {message}"[:2000], model=model, run_id=run_id,
                     outcome="insufficient_data")
        return {"status": "insufficient_data", "count": rows, "message": message, "unused_features": unused,
                "data_report": data_report}
    # status "error": the CLI exits 1 and the task ends FAILURE, as for any failed run; `outcome` says which
    message = f"data checks failed: {problems}"
    run_lock.finish(session, run_id, status=RunStatus.FAILED, outcome="data_check_failed", dataset_size=rows,
                    error_message=message[:2000], data_report=data_report, source=_source(cfg))
    retrain_requests.close(session, request_id, RequestStatus.FAILED, message[:2000])
    audit.record(session, "decision", f"{model}: retrain {run_id} {message}"[:2000], model=model, run_id=run_id,
                 outcome="data_check_failed", checks=sorted({p.check for p in report.errors}))
    return {"status": "error", "outcome": "data_check_failed", "message": message, "data_report": data_report}


def _source(cfg: ModelConfig) -> str:
    """What the run read its rows from, as training_runs.source records it."""
    return "observations" if cfg.training.source is None else sources.KIND


def _remove(paths: list[Path]) -> None:
    for path in paths:
        artifacts.remove(path)


def _train_and_decide(
    session: Session, settings: Settings, cfg: ModelConfig, model: str, run_id: str, request_id: int | None,
    written: list[Path], heartbeat: run_lock.Heartbeat, fine_tune: bool = False, trigger: Trigger = Trigger.MANUAL,
) -> dict[str, Any]:
    # 2 load + validate
    # The rows are read through the schema the model's production version was trained on, unless the
    # configuration names the features (services/schema.py: resolve). Known before the rows are, it
    # lets the load read only those columns, typed (services/columnar.py).
    production = schema.production(session, model)
    if cfg.training.source is not None:  # the user's own query (services/sources.py)
        raw = sources.load(session, model, cfg.training.source, cfg.training.max_rows,
                           "row_id", dataset.TIME, dataset.LABEL)
    else:
        raw = dataset.load(session, model, cfg.training.max_rows, schema.known(cfg.features, production))
    used = schema.resolve(raw, cfg.features, production)
    valid = dataset.validate(raw, used, needs_time=family_class(cfg.family).needs_time)
    frame = valid.frame
    note = valid.unused_note()
    log.info("%s: %d rows read, %d kept after validation%s", model, len(raw), len(frame),
             f" ({valid.dropped} dropped: {valid.problems})" if valid.dropped else "")
    if len(frame) < cfg.training.min_samples:
        message = f"Need at least {cfg.training.min_samples} samples for retraining, got {len(frame)}"
        if valid.dropped:
            message += f" ({valid.dropped} invalid rows dropped: {valid.problems})"
        if note:
            message += f"; {note}"
        run_lock.finish(session, run_id, status=RunStatus.SKIPPED, outcome="insufficient_data",
                        dataset_size=len(frame), error_message=message, source=_source(cfg))
        retrain_requests.close(session, request_id, RequestStatus.COMPLETED)
        audit.record(session, "decision", f"{model}: {message}", model=model, run_id=run_id, outcome="insufficient_data")
        return {"status": "insufficient_data", "count": len(frame), "message": message, "unused_features": valid.unused}

    champion = registry.production(session, model)
    if trigger != Trigger.MANUAL and (stale := _too_little_new_data(session, model, frame, cfg.training.min_new_rows)):
        return _no_new_data(session, cfg, model, run_id, request_id, len(frame), stale)
    # No transaction stays open while fitting (on SQLite it would hold the write lock); the
    # champion read here is re-checked by the compare-and-swap at commit.
    session.commit()

    # 3 split (the holdout after every row the champion was trained on), 4 fit
    after = (champion.training_window_end, champion.training_last_row_id) \
        if champion is not None and champion.training_window_end is not None else None
    try:
        train, holdout_frame, holdout = dataset.split(frame, cfg.training.test_fraction, after)
    except DataError as exc:
        if after is None:
            raise
        return _no_new_data(session, cfg, model, run_id, request_id, len(frame),
                            f"{exc}: nothing to judge a candidate on")
    report = _check_data(session, cfg, run_id, raw, valid, train, holdout_frame, production)
    if report is not None and not report.ok:  # nothing is fitted: the run fails (or lacks data) with its report
        return _data_check_failed(session, cfg, model, run_id, request_id, report, len(frame), valid.unused)
    log.info("%s: split %d training rows, %d holdout rows (%s .. %s)%s", model, len(train), holdout.rows,
             holdout.start, holdout.end, f", after {champion.version_id}'s training rows" if after else "")
    estimator = load_family(cfg.family, cfg.params)
    parent, tuned_note = _parent(estimator, champion, fine_tune)
    t0 = time.perf_counter()
    estimator.fit(dataset.features(train), train[dataset.LABEL],
                  time=train[dataset.TIME] if estimator.needs_time else None, parent=parent)
    fit_seconds = time.perf_counter() - t0
    log.info("%s: fitted %s in %.2f s%s", model, estimator.algorithm, fit_seconds, f" ({tuned_note})" if tuned_note else "")

    # 5 score both on the same rows
    cand_metrics, cand_pred = _score(estimator, holdout_frame, cfg.primary_metric)
    champ_metrics = champ_pred = problem = None
    if champion is not None:
        try:
            champ_metrics, champ_pred = _score(registry.load_estimator(champion), holdout_frame, cfg.primary_metric)
        except (ArtifactError, DataError) as exc:
            problem = str(exc)

    # 6 decide, on evidence measured on these rows only
    evidence = _evidence(estimator, cfg, train, holdout_frame, holdout.rows, cand_metrics, cand_pred, champion,
                         champ_metrics, champ_pred, problem)
    decision = policy.decide(evidence, cfg.promotion)
    paired = evidence.test or evidence.baseline_test
    log.info("%s: candidate %s %.6g, production %s%s", model, cand_metrics.primary, cand_metrics.score,
             f"{champ_metrics.score:.6g}" if champ_metrics else (problem or "none"),
             f"; paired test {paired.point_pct:+.2f}% [{paired.lower_pct:+.2f}%, {paired.upper_pct:+.2f}%]" if paired else "")
    for rule in decision.rules:
        log.info("%s: rule %s: value %s, threshold %s -> %s", model, rule.rule, rule.value, rule.threshold,
                 {True: "pass", False: "FAIL", None: "n/a"}[rule.passed])
    log.info("%s: %s: %s", model, "promote" if decision.promote else "keep", decision.reason)
    warned = report.warning_note() if report else ""
    reason = "; ".join(part for part in (decision.reason, tuned_note, note, warned) if part)
    if decision.alert:
        audit.record(session, "alert", f"{model}: {decision.reason}", model=model, run_id=run_id,
                     version_id=champion.version_id if champion else None)

    # 7 artifact first (atomic rename), then every row and the pointer in this one transaction
    if heartbeat.lost:
        raise run_lock.LostLock(f"run {run_id} lost its lock while fitting; its result is discarded")
    deployed, refit_seconds = estimator, 0.0
    if decision.promote and cfg.promotion.deploy == "refit":  # the judged configuration, refit on every row
        deployed, refit_seconds = _refit(cfg, frame, parent)
    path, checksum = artifacts.write(deployed, Path(settings.artifact_dir) / model, run_id)
    written.append(path)
    fitted = frame if deployed is not estimator else train
    number = registry.next_number(session, model)
    version_id = f"{model}-v{number}"
    now = clock.now()
    session.add(ModelVersion(
        version_id=version_id, model=model, number=number, family=cfg.family, algorithm=estimator.algorithm,
        trained_at=now, num_training_samples=len(fitted), training_duration_seconds=fit_seconds + refit_seconds,
        hyperparameters=estimator.get_params(), metrics=cand_metrics.storable(), artifact_uri=str(path),
        artifact_sha256=checksum, training_window_start=fitted[dataset.TIME].iloc[0],
        training_window_end=fitted[dataset.TIME].iloc[-1], training_last_row_id=int(fitted["row_id"].iloc[-1]),
        refit=deployed is not estimator, library_versions=estimator.library_versions(),
        parent_version_id=champion.version_id if champion else None,
        feature_schema=valid.schema.observed(dataset.features(train)).to_json(),
    ))
    session.flush()
    # The reference the drift check compares recent inputs with (services/drift.py): built here, once.
    session.add(FeatureProfile(version_id=version_id, rows=len(train), profile=drift.build_profile(
        dataset.features(train), {f.name: f.type.value for f in valid.schema.features})))
    holdout_cols = dict(holdout_start=holdout.start, holdout_end=holdout.end, holdout_rows=holdout.rows,
                        holdout_hash=holdout.hash, primary_metric=cand_metrics.primary)
    session.add(ModelEvaluation(
        version_id=version_id, run_id=run_id, role="candidate", metrics=cand_metrics.storable(),
        overall_score=_finite(cand_metrics.score), champion_score=_finite(champ_metrics.score) if champ_metrics else None,
        predictions_sample=_sample(holdout_frame, cand_pred), **holdout_cols,
        test=None if paired is None else paired.to_json() | {"reference": "champion" if evidence.test else "baseline"},
    ))
    if champion is not None and champ_metrics is not None:
        session.add(ModelEvaluation(
            version_id=champion.version_id, run_id=run_id, role="champion", metrics=champ_metrics.storable(),
            overall_score=_finite(champ_metrics.score), champion_score=None,
            predictions_sample=_sample(holdout_frame, champ_pred), **holdout_cols,
        ))
    if decision.promote:
        registry.swap_production(session, model, version_id, champion.version_id if champion else None,
                                 actor="policy", reason=decision.reason, run_id=run_id,
                                 watch=cfg.promotion.probation.enabled)
    registry.archive_old(session, model, cfg.keep_versions)  # kept candidates too: their files are freed
    outcome = "retrained" if decision.promote else "kept"
    run_lock.finish(
        session, run_id, status=RunStatus.COMPLETED, outcome=outcome, version_id=version_id,
        dataset_size=len(frame), train_size=len(train), holdout_size=holdout.rows,
        metrics=cand_metrics.storable(), old_metrics=champ_metrics.storable() if champ_metrics else None,
        promoted_to_production=decision.promote,
        improvement_percentage=None if decision.improvement_pct is None else _finite(decision.improvement_pct),
        promotion_reason=reason, source=_source(cfg), fine_tune=parent is not None, decision=decision.record(),
    )
    retrain_requests.close(session, request_id, RequestStatus.COMPLETED)
    audit.record(
        session, "decision", f"{model}: {version_id} {'promoted' if decision.promote else 'kept'}: {reason}",
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
        "feature_problems": valid.problems,
        "unused_features": valid.unused,
        "data_report": report.to_json() if report else None,
        "metrics": _result_metrics(cand_metrics, holdout.rows, now.isoformat()),
        "old_metrics": _result_metrics(champ_metrics, holdout.rows),
        "improvement": _improvement(cand_metrics, champ_metrics, decision.improvement_pct, estimator.metric_spec),
        "promoted": decision.promote,
        "refit": deployed is not estimator,
        "test": None if paired is None else paired.to_json(),
        "decision": decision.record(),
        "fine_tune": parent is not None,
        "reason": reason,
        "retrained_at": now.isoformat(),
    }
    return result


def _evidence(estimator: Family, cfg: ModelConfig, train: pd.DataFrame, holdout: pd.DataFrame, rows: int,
              cand: Metrics, cand_pred: Prediction, champion: ModelVersion | None, champ: Metrics | None,
              champ_pred: Prediction | None, problem: str | None) -> policy.Evidence:
    """Everything the policy decides from: the paired test against the champion (or against a constant
    when there is none to judge against), the guard metrics, and when production last changed."""
    sig, y = cfg.promotion.significance, holdout[dataset.LABEL]
    test = baseline_test = None
    guard_results: tuple[policy.Guard, ...] = ()
    usable = champ is not None and champ_pred is not None and cand.primary not in champ.not_finite
    if usable and sig.test == "bootstrap":
        test = significance.paired_bootstrap(estimator, y, cand_pred, champ_pred, cand.primary,
                                             resamples=sig.resamples, confidence=sig.confidence, seed=sig.seed)
    if usable:
        guard_results = guards.measure(estimator, holdout, dataset.LABEL, cand_pred, champ_pred, cfg.promotion.guards,
                                       cfg.accuracy.segments, cfg.promotion.guard_min_rows)
    elif cfg.promotion.baseline:
        constant = significance.naive_baseline(estimator, train[dataset.LABEL], len(holdout))
        baseline_test = significance.paired_bootstrap(estimator, y, cand_pred, constant, cand.primary,
                                                      resamples=sig.resamples, confidence=sig.confidence, seed=sig.seed)
    return policy.Evidence(
        candidate=cand, holdout_rows=rows, champion=champ, champion_id=champion.version_id if champion else None,
        champion_problem=problem, test=test, baseline_test=baseline_test, guards=guard_results,
        last_change=clock.as_utc(champion.promoted_at) if champion and champion.promoted_at else None, now=clock.now())


def _refit(cfg: ModelConfig, frame: pd.DataFrame, parent: Family | None) -> tuple[Family, float]:
    """The same configuration fitted on every row, the holdout included (promotion.deploy: refit)."""
    refit = load_family(cfg.family, cfg.params)
    t0 = time.perf_counter()
    refit.fit(dataset.features(frame), frame[dataset.LABEL],
              time=frame[dataset.TIME] if refit.needs_time else None, parent=parent)
    return refit, time.perf_counter() - t0


def _too_little_new_data(session: Session, model: str, frame: pd.DataFrame, least: int) -> str:
    """Why an automatic run should not retrain ('' when it should): fewer than `least` rows newer than
    the data the model's last completed run saw (its holdout's end)."""
    if least <= 0:
        return ""
    seen = session.scalar(
        sa.select(sa.func.max(ModelEvaluation.holdout_end))
        .join(TrainingRun, TrainingRun.run_id == ModelEvaluation.run_id)
        .where(TrainingRun.model == model, ModelEvaluation.role == "candidate")
    )
    if seen is None:
        return ""
    times = frame[dataset.TIME]
    cutoff = pd.Timestamp(clock.as_utc(seen))
    if times.dt.tz is None:
        cutoff = cutoff.tz_localize(None)
    new = int((times > cutoff).sum())
    if new >= least:
        return ""
    return (f"{new} labelled rows newer than the last run's data (up to {cutoff:%Y-%m-%d %H:%M}); an automatic "
            f"retrain needs >= {least} (training.min_new_rows)")


def _no_new_data(session: Session, cfg: ModelConfig, model: str, run_id: str, request_id: int | None, rows: int,
                 message: str) -> dict[str, Any]:
    """End a run that has nothing new to learn from or to judge on: nothing fitted, nothing promoted."""
    run_lock.finish(session, run_id, status=RunStatus.SKIPPED, outcome="no_new_data", dataset_size=rows,
                    error_message=message[:2000], source=_source(cfg))
    retrain_requests.close(session, request_id, RequestStatus.COMPLETED)
    audit.record(session, "decision", f"{model}: {message}"[:2000], model=model, run_id=run_id, outcome="no_new_data")
    return {"status": "no_new_data", "count": rows, "message": message}


def _parent(estimator: Family, champion: ModelVersion | None, fine_tune: bool) -> tuple[Family | None, str | None]:
    """The production estimator a fine-tune continues from, or None (a full retrain) and why not."""
    if not fine_tune:
        return None, None
    if not estimator.can_fine_tune:
        return None, f"family {estimator.algorithm!r} cannot fine-tune: retrained from scratch"
    if champion is None:
        return None, "no production version to fine-tune: trained from scratch"
    try:
        return registry.load_estimator(champion), f"fine-tuned from {champion.version_id}"
    except ArtifactError as exc:
        return None, f"production artifact unusable ({exc}): retrained from scratch"


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _sample(holdout: pd.DataFrame, predicted: Prediction) -> dict[str, Any]:
    n = min(SAMPLE_ROWS, len(holdout))
    head = predicted.take(n)
    rows = []
    for i, (row_id, actual) in enumerate(zip(holdout["row_id"][:n], holdout[dataset.LABEL][:n], strict=True)):
        row = {"row_id": int(row_id), "actual": _plain(actual), "predicted": _plain(head.value[i])}
        if head.proba is not None:
            row["proba"] = {str(c): _finite(p) for c, p in zip(head.classes or (), head.proba[i], strict=True)}
        if head.lower is not None and head.upper is not None:
            row["interval"] = [_finite(head.lower[i]), _finite(head.upper[i])]
        rows.append(row)
    return {"rows": rows}


def _plain(value: Any) -> Any:
    """A number or a class label as JSON holds it."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return _finite(value)
    return str(value) if not isinstance(value, (str, bool)) else value
