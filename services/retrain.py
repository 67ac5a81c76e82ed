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

The steps' parts live beside it: services/run_gates.py (the rows to train on, and the endings of a run
with too few), services/candidate_fit.py (fine-tune and refit), services/candidate_evidence.py (what
the policy decides from, and the scores as the run and its evaluations record them).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import ModelConfig, Settings, UnknownModel
from retrainer.db import TRANSIENT_ERRORS
from retrainer.db.records import FeatureProfile, ModelEvaluation, ModelVersion, RequestStatus, RunStatus, Trigger
from retrainer.models.base import ArtifactError, DataError, Family, Metrics, Prediction, family_class, load_family
from retrainer.services import (
    artifacts,
    audit,
    candidate_evidence,
    candidate_fit,
    dataset,
    drift,
    policy,
    registry,
    retrain_requests,
    run_gates,
    run_lock,
    schema,
    sources,
)

log = logging.getLogger(__name__)


def _score(estimator: Family, holdout: pd.DataFrame, primary: str | None) -> tuple[Metrics, Prediction]:
    """The estimator on the holdout rows, its metrics with the model's primary metric."""
    time = holdout[dataset.TIME] if estimator.needs_time else None
    predicted = estimator.predict(dataset.features(holdout), time=time)
    metrics = estimator.evaluate(holdout[dataset.LABEL], predicted)
    return Metrics.of(metrics.values, estimator.metric_spec, primary), predicted


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
                                       claimed.fine_tune, trigger, claimed.train_since)
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
                            source=run_gates.run_source(cfg))
            retrain_requests.close(session, request_id, RequestStatus.FAILED, message[:2000])
            audit.record(session, "decision", f"{model}: retrain {run_id} failed: {message[:500]}", model=model,
                         run_id=run_id, outcome="error")
            session.commit()
        except run_lock.LostLock:
            session.rollback()
        return base | {"status": "error", "message": message}


def _remove(paths: list[Path]) -> None:
    for path in paths:
        artifacts.remove(path)


def _train_and_decide(
    session: Session, settings: Settings, cfg: ModelConfig, model: str, run_id: str, request_id: int | None,
    written: list[Path], heartbeat: run_lock.Heartbeat, fine_tune: bool = False, trigger: Trigger = Trigger.MANUAL,
    train_since: datetime | None = None,
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
    frame = valid.frame if train_since is None else \
        run_gates.rows_since(model, valid.frame, train_since, cfg.training.min_samples)
    note = valid.unused_note()
    log.info("%s: %d rows read, %d kept after validation%s", model, len(raw), len(frame),
             f" ({valid.dropped} dropped: {valid.problems})" if valid.dropped else "")
    if len(frame) < cfg.training.min_samples:
        return run_gates.insufficient_data(session, cfg, model, run_id, request_id, len(frame), valid, note)

    champion = registry.production(session, model)
    if trigger != Trigger.MANUAL and \
            (stale := run_gates.too_little_new_data(session, model, frame, cfg.training.min_new_rows)):
        return run_gates.no_new_data(session, cfg, model, run_id, request_id, len(frame), stale)
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
        return run_gates.no_new_data(session, cfg, model, run_id, request_id, len(frame),
                            f"{exc}: nothing to judge a candidate on")
    report = run_gates.check_data(session, cfg, run_id, raw, valid, train, holdout_frame, production)
    if report is not None and not report.ok:  # nothing is fitted: the run fails (or lacks data) with its report
        return run_gates.data_check_failed(session, cfg, model, run_id, request_id, report, len(frame), valid.unused)
    log.info("%s: split %d training rows, %d holdout rows (%s .. %s)%s", model, len(train), holdout.rows,
             holdout.start, holdout.end, f", after {champion.version_id}'s training rows" if after else "")
    estimator = load_family(cfg.family, cfg.params)
    parent, tuned_note = candidate_fit.fine_tune_parent(estimator, champion, fine_tune)
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
    evidence = candidate_evidence.evidence(estimator, cfg, train, holdout_frame, holdout.rows, cand_metrics, cand_pred,
                                            champion, champ_metrics, champ_pred, problem)
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
        deployed, refit_seconds = candidate_fit.refit_on_every_row(cfg, frame, parent)
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
        overall_score=candidate_evidence.finite(cand_metrics.score),
        champion_score=candidate_evidence.finite(champ_metrics.score) if champ_metrics else None,
        predictions_sample=candidate_evidence.holdout_sample(holdout_frame, cand_pred), **holdout_cols,
        test=None if paired is None else paired.to_json() | {"reference": "champion" if evidence.test else "baseline"},
    ))
    if champion is not None and champ_metrics is not None:
        session.add(ModelEvaluation(
            version_id=champion.version_id, run_id=run_id, role="champion", metrics=champ_metrics.storable(),
            overall_score=candidate_evidence.finite(champ_metrics.score), champion_score=None,
            predictions_sample=candidate_evidence.holdout_sample(holdout_frame, champ_pred), **holdout_cols,
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
        improvement_percentage=(None if decision.improvement_pct is None
                                else candidate_evidence.finite(decision.improvement_pct)),
        promotion_reason=reason, source=run_gates.run_source(cfg), fine_tune=parent is not None,
        decision=decision.record(),
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
        "metrics": candidate_evidence.result_metrics(cand_metrics, holdout.rows, now.isoformat()),
        "old_metrics": candidate_evidence.result_metrics(champ_metrics, holdout.rows),
        "improvement": candidate_evidence.improvement(cand_metrics, champ_metrics, decision.improvement_pct,
                                                      estimator.metric_spec),
        "promoted": decision.promote,
        "refit": deployed is not estimator,
        "test": None if paired is None else paired.to_json(),
        "decision": decision.record(),
        "fine_tune": parent is not None,
        "reason": reason,
        "retrained_at": now.isoformat(),
    }
    return result
