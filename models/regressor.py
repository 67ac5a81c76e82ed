"""`regressor`: an XGBoost regressor for spend and other numbers, saved as XGBoost JSON.

Metrics, as scikit-learn defines them: MAE, MSE and R² (`r2_score`: 1.0 for a perfect prediction of
a constant target, 0.0 for an imperfect one). The primary metric is MAE: it is in the target's own
units and robust to the few very large values spend data has, so the policy's relative improvement
is not decided by a handful of outliers, as it would be with MSE; a model's `primary_metric` may
choose MSE or R² instead.

Numeric, categorical (native) and boolean features and fine-tuning come from
retrainer.models.xgb, shared with `ctr`. `objective` picks the loss: squared error (default),
absolute error (what MAE scores), pseudo-Huber (squared near zero, absolute in the tails), or
Tweedie for non-negative targets with many zeros (spend per visitor).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel

from retrainer.models import resampling
from retrainer.models.base import DataError, Live, Metrics, MetricSpec, Prediction
from retrainer.models.xgb import XGBoostRegression, XGBParams

Objective = Literal["reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror", "reg:tweedie"]


class RegressorParams(XGBParams):
    objective: Objective = "reg:squarederror"


class RegressorFamily(XGBoostRegression):
    name: ClassVar[str] = "regressor"
    Params: ClassVar[type[BaseModel]] = RegressorParams
    metric_spec: ClassVar[MetricSpec] = MetricSpec(
        names=("mae", "mse", "r2"), primary="mae", higher_is_better=frozenset({"r2"}), live=Live.REGRESSION,
    )

    def fit(self, X: pd.DataFrame, y: pd.Series, time: pd.Series | None = None, parent: Self | None = None) -> Self:
        if self.params["objective"] == "reg:tweedie" and (np.asarray(y, dtype=float) < 0).any():
            raise DataError("labels must be non-negative for objective reg:tweedie")
        return super().fit(X, y, time=time, parent=parent)

    def evaluate(self, y: Any, prediction: Prediction) -> Metrics:
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        truth, predicted = np.asarray(y, dtype=float), np.asarray(prediction.value, dtype=float)
        # r2_score's rule for a constant target (1.0 if perfect, else 0.0), decided on the values: its own
        # test, SST == 0, misses a constant such as 0.1 whose float mean is an ulp off.
        r2 = (r2_score(truth, predicted) if len(truth) < 2 or len(np.unique(truth)) > 1
              else float(np.array_equal(truth, predicted)))
        values = {"mae": mean_absolute_error(truth, predicted), "mse": mean_squared_error(truth, predicted), "r2": r2}
        return Metrics.of(values, self.metric_spec)

    def resampled(self, y: Any, prediction: Prediction, metric: str, counts: np.ndarray) -> np.ndarray:
        truth, predicted = np.asarray(y, dtype=float), np.asarray(prediction.value, dtype=float)
        counts = resampling.check_counts(counts, len(truth))
        if metric == "mae":
            return resampling.weighted_mean(counts, np.abs(predicted - truth))
        if metric == "mse":
            return resampling.weighted_mean(counts, (predicted - truth) ** 2)
        if metric == "r2":
            return resampling.r2(counts, truth, predicted, constant="sklearn")
        raise resampling.unknown(metric, self.metric_spec.names)
