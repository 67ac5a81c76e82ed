"""`ctr`: an XGBoost regressor for click-through rate (also ROAS), saved as XGBoost JSON.

The XGBoost machinery (native categorical features, boosting on from a parent, the artifact) is
shared with the other XGBoost families in retrainer.models.xgb; this module adds CTR's metrics.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from retrainer.models.base import Live, Metrics, MetricSpec, Prediction
from retrainer.models.xgb import XGBoostRegression

WITHIN = 0.20  # "accurate" = prediction within ±20 % of the actual value


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    err = y_pred - y_true
    sst = float(np.sum((y_true - y_true.mean()) ** 2)) if len(y_true) else 0.0
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

    def evaluate(self, y: Any, prediction: Prediction) -> Metrics:
        return Metrics.of(regression_metrics(y, prediction.value), self.metric_spec)
