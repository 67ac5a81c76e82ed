"""What a candidate is judged on, and how its scores are recorded (steps 5-7 of services/retrain.py).

evidence() gathers what the promotion policy decides from; the rest turns metrics and predictions
into the JSON a run's result and its ModelEvaluation rows hold, NaN and infinities as None.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from retrainer import clock
from retrainer.config import ModelConfig
from retrainer.db.records import ModelVersion
from retrainer.models.base import Family, Metrics, Prediction
from retrainer.services import dataset, guards, policy, significance

SAMPLE_ROWS = 20  # holdout rows kept on an evaluation, to show what the model predicted


def evidence(estimator: Family, cfg: ModelConfig, train: pd.DataFrame, holdout: pd.DataFrame, rows: int,
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


def result_metrics(m: Metrics | None, rows: int, trained_at: str | None = None) -> dict[str, Any] | None:
    """Metrics as a run's result shows them: test_<metric>, test_count, and when it was trained."""
    if m is None:
        return None
    out = {f"test_{k}": v for k, v in m.storable().items()} | {"test_count": rows}
    return out | ({"trained_at": trained_at} if trained_at else {})


def improvement(cand: Metrics, champ: Metrics | None, pct: float | None, spec: Any) -> dict[str, Any] | None:
    """Per metric, how much better the candidate is (+ = better, in that metric's own direction)."""
    if champ is None:
        return None
    diff = {
        f"{k}_improvement": finite((cand.values[k] - champ.values[k]) * (1 if spec.better_is_higher(k) else -1))
        for k in cand.values if k in champ.values
    }
    return diff | {"percentage": None if pct is None else finite(pct), "primary": cand.primary}


def finite(value: Any) -> float | None:
    """A number as a float, None when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def holdout_sample(holdout: pd.DataFrame, predicted: Prediction) -> dict[str, Any]:
    """The first holdout rows beside what was predicted for them (ModelEvaluation.predictions_sample)."""
    n = min(SAMPLE_ROWS, len(holdout))
    head = predicted.take(n)
    rows = []
    for i, (row_id, actual) in enumerate(zip(holdout["row_id"][:n], holdout[dataset.LABEL][:n], strict=True)):
        row = {"row_id": int(row_id), "actual": _plain(actual), "predicted": _plain(head.value[i])}
        if head.proba is not None:
            row["proba"] = {str(c): finite(p) for c, p in zip(head.classes or (), head.proba[i], strict=True)}
        if head.lower is not None and head.upper is not None:
            row["interval"] = [finite(head.lower[i]), finite(head.upper[i])]
        rows.append(row)
    return {"rows": rows}


def _plain(value: Any) -> Any:
    """A number or a class label as JSON holds it."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return finite(value)
    return str(value) if not isinstance(value, (str, bool)) else value
