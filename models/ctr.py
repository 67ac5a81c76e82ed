"""`ctr`: an XGBoost regressor for click-through rate (also ROAS), saved as XGBoost JSON.

The XGBoost machinery (native categorical features, boosting on from a parent, the artifact) is
shared with the other XGBoost families in retrainer.models.xgb; this module adds CTR's metrics.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from retrainer.models import resampling
from retrainer.models.base import Live, Metrics, MetricSpec, Prediction
from retrainer.models.xgb import XGBoostRegression

WITHIN = 0.20  # "accurate" = prediction within ±20 % of the actual value


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    err = y_pred - y_true
    # A constant target has no variance to explain: R² 0. Tested on the values, since the float mean of a
    # constant such as 0.1 is off by an ulp and its tiny SST would give a huge negative R².
    sst = float(np.sum((y_true - y_true.mean()) ** 2)) if len(np.unique(y_true)) > 1 else 0.0
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": 1.0 - float(np.sum(err**2)) / sst if sst > 0 else 0.0,
        "accuracy": float(np.mean(np.abs(err) <= WITHIN * np.abs(y_true))),
    }


class CTRFamily(XGBoostRegression):
    name: ClassVar[str] = "ctr"
    metric_spec: ClassVar[MetricSpec] = MetricSpec(
        names=("mae", "rmse", "r2", "accuracy"), primary="mae", higher_is_better=frozenset({"r2", "accuracy"}),
        live=Live.REGRESSION, units={"accuracy": "fraction within ±20 %"},
    )
    live_thresholds: ClassVar[dict[str, float]] = {"mae": 0.02}  # the reference's daily check: MAE > 0.02
    # live metric -> its name in evaluate's metrics (the accuracy check's relative threshold reads it)
    live_holdout_metric: ClassVar[dict[str, str]] = {"within_20pct": "accuracy"}

    def evaluate(self, y: Any, prediction: Prediction) -> Metrics:
        return Metrics.of(regression_metrics(y, prediction.value), self.metric_spec)

    def resampled(self, y: Any, prediction: Prediction, metric: str, counts: np.ndarray) -> np.ndarray:
        truth, predicted = np.asarray(y, dtype=float), np.asarray(prediction.value, dtype=float)
        counts = resampling.check_counts(counts, len(truth))
        err = predicted - truth
        if metric == "mae":
            return resampling.weighted_mean(counts, np.abs(err))
        if metric == "rmse":
            return resampling.weighted_rms(counts, err)
        if metric == "r2":
            return resampling.r2(counts, truth, predicted, constant="zero")
        if metric == "accuracy":
            return resampling.weighted_mean(counts, np.abs(err) <= WITHIN * np.abs(truth))
        raise resampling.unknown(metric, self.metric_spec.names)
