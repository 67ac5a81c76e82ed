"""The rows a retrain has to train and judge on (steps 2-3 of services/retrain.py), and the endings
of a run that has too few: nothing is fitted, nothing promoted, the run and its request are closed
and the decision is audited.

  insufficient_data   fewer valid rows than training.min_samples, or a split too small to judge on
  no_new_data         an automatic run without training.min_new_rows new rows, or no holdout rows
                      after the champion's training rows
  data_check_failed   a data check (services/data_checks.py) failed: the report is on the run
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import ModelConfig
from retrainer.db.records import ModelEvaluation, RequestStatus, RunStatus, TrainingRun
from retrainer.models.base import load_family
from retrainer.services import audit, data_checks, dataset, retrain_requests, run_lock, schema, sources

# The pipeline's logger: a run's log (services/run_logs.py) names these lines as it names the pipeline's own.
log = logging.getLogger("retrainer.services.retrain")


def run_source(cfg: ModelConfig) -> str:
    """What the run read its rows from, as training_runs.source records it."""
    return "observations" if cfg.training.source is None else sources.KIND


def rows_since(model: str, frame: pd.DataFrame, since: datetime, least: int) -> pd.DataFrame:
    """The rows from `since` on (when production got worse: services/since_change.py), unless fewer than
    `least` of them are valid: then the whole window, as an ordinary retrain would use."""
    kept = frame[frame[dataset.TIME] >= pd.Timestamp(since)]
    if len(kept) < least:
        log.info("%s: only %d valid rows since %s, fewer than %d: training on the newest %d", model, len(kept),
                 since.isoformat(), least, len(frame))
        return frame
    log.info("%s: training on the %d rows since %s, when production got worse (of %d read)", model, len(kept),
             since.isoformat(), len(frame))
    return kept


def too_little_new_data(session: Session, model: str, frame: pd.DataFrame, least: int) -> str:
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


def check_data(session: Session, cfg: ModelConfig, run_id: str, raw: pd.DataFrame, valid: dataset.Validated,
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


def insufficient_data(session: Session, cfg: ModelConfig, model: str, run_id: str, request_id: int | None,
                      rows: int, valid: dataset.Validated, note: str) -> dict[str, Any]:
    """End a run with fewer valid rows than training.min_samples: more data fixes it."""
    message = f"Need at least {cfg.training.min_samples} samples for retraining, got {rows}"
    if valid.dropped:
        message += f" ({valid.dropped} invalid rows dropped: {valid.problems})"
    if note:
        message += f"; {note}"
    run_lock.finish(session, run_id, status=RunStatus.SKIPPED, outcome="insufficient_data",
                    dataset_size=rows, error_message=message, source=run_source(cfg))
    retrain_requests.close(session, request_id, RequestStatus.COMPLETED)
    audit.record(session, "decision", f"{model}: {message}", model=model, run_id=run_id, outcome="insufficient_data")
    return {"status": "insufficient_data", "count": rows, "message": message, "unused_features": valid.unused}


def no_new_data(session: Session, cfg: ModelConfig, model: str, run_id: str, request_id: int | None, rows: int,
                message: str) -> dict[str, Any]:
    """End a run that has nothing new to learn from or to judge on: nothing fitted, nothing promoted."""
    run_lock.finish(session, run_id, status=RunStatus.SKIPPED, outcome="no_new_data", dataset_size=rows,
                    error_message=message[:2000], source=run_source(cfg))
    retrain_requests.close(session, request_id, RequestStatus.COMPLETED)
    audit.record(session, "decision", f"{model}: {message}"[:2000], model=model, run_id=run_id, outcome="no_new_data")
    return {"status": "no_new_data", "count": rows, "message": message}


def data_check_failed(session: Session, cfg: ModelConfig, model: str, run_id: str, request_id: int | None,
                      report: data_checks.DataReport, rows: int, unused: dict[str, int]) -> dict[str, Any]:
    """End a run whose data failed its checks: nothing fitted, nothing promoted, the report on the run.
    When only the split is too small, more data fixes it: that is insufficient_data, as too few rows are."""
    problems, data_report = report.summary(), report.to_json()
    if report.too_few_rows:
        message = f"too few rows to train and judge a candidate: {problems}"
        run_lock.finish(session, run_id, status=RunStatus.SKIPPED, outcome="insufficient_data", dataset_size=rows,
                        error_message=message[:2000], data_report=data_report, source=run_source(cfg))
        retrain_requests.close(session, request_id, RequestStatus.COMPLETED)
        audit.record(session, "decision", f"{model}: {message}"[:2000], model=model, run_id=run_id,
                     outcome="insufficient_data")
        return {"status": "insufficient_data", "count": rows, "message": message, "unused_features": unused,
                "data_report": data_report}
    # status "error": the CLI exits 1 and the task ends FAILURE, as for any failed run; `outcome` says which
    message = f"data checks failed: {problems}"
    run_lock.finish(session, run_id, status=RunStatus.FAILED, outcome="data_check_failed", dataset_size=rows,
                    error_message=message[:2000], data_report=data_report, source=run_source(cfg))
    retrain_requests.close(session, request_id, RequestStatus.FAILED, message[:2000])
    audit.record(session, "decision", f"{model}: retrain {run_id} {message}"[:2000], model=model, run_id=run_id,
                 outcome="data_check_failed", checks=sorted({p.check for p in report.errors}))
    return {"status": "error", "outcome": "data_check_failed", "message": message, "data_report": data_report}
