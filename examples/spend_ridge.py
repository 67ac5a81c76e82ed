"""A complete model family in one file: ridge regression for spend, the README's example.

Register it from your own package's pyproject.toml, and name it in retrainer.yaml:

    [project.entry-points."retrainer.models"]
    spend_ridge = "spend_ridge:SpendRidge"

    models:
      spend:
        family: spend_ridge
        params: {alpha: 0.5}

Check it as retrainer checks its own families:

    from retrainer.models.testing import check_family
    check_family(SpendRidge)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from retrainer.models.base import DataError, FeatureType, Live, Metrics, MetricSpec, Prediction, Task


class RidgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown key stops retrainer at start-up, named
    alpha: float = Field(1.0, ge=0)


class SpendRidge:
    name: ClassVar[str] = "spend_ridge"
    algorithm: ClassVar[str] = "ridge"
    artifact_suffix: ClassVar[str] = ".json"
    task: ClassVar[Task] = Task.REGRESSION
    feature_types: ClassVar[frozenset[FeatureType]] = frozenset({FeatureType.NUMERIC, FeatureType.BOOLEAN})
    needs_time: ClassVar[bool] = False
    can_fine_tune: ClassVar[bool] = False
    metric_spec: ClassVar[MetricSpec] = MetricSpec(
        names=("mae", "rmse", "r2"), primary="mae", higher_is_better=frozenset({"r2"}), live=Live.REGRESSION)
    Params: ClassVar[type[BaseModel]] = RidgeParams

    def __init__(self, **params: Any) -> None:
        self.params = RidgeParams(**params).model_dump()

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.features_ if f not in X.columns]
        if missing:
            raise DataError(f"missing feature column(s): {', '.join(missing)}")
        x = X[self.features_].to_numpy(dtype=float)
        if not np.isfinite(x).all():
            raise DataError("features contain NaN or infinite values")
        return np.column_stack([x, np.ones(len(x))])  # and an intercept

    def fit(self, X: pd.DataFrame, y: pd.Series, time: pd.Series | None = None, parent: Self | None = None) -> Self:
        self.features_ = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])]
        if not self.features_:
            raise DataError("no numeric feature to train on")
        a = self._matrix(X)
        penalty = self.params["alpha"] * np.eye(a.shape[1])
        penalty[-1, -1] = 0  # the intercept is not shrunk
        self.coef_ = np.linalg.solve(a.T @ a + penalty, a.T @ np.asarray(y, dtype=float))
        return self

    def predict(self, X: pd.DataFrame, time: pd.Series | None = None) -> Prediction:
        return Prediction(self._matrix(X) @ self.coef_)

    def evaluate(self, y: Any, prediction: Prediction) -> Metrics:
        y, err = np.asarray(y, dtype=float), prediction.value - np.asarray(y, dtype=float)
        sst = float(np.sum((y - y.mean()) ** 2))
        return Metrics.of({"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))),
                           "r2": 1.0 - float(np.sum(err**2)) / sst if sst > 0 else 0.0}, self.metric_spec)

    def save(self, path: Path) -> None:  # plain JSON: portable, and nothing to unpickle
        path.write_text(json.dumps({"params": self.params, "features": self.features_, "coef": self.coef_.tolist()}))

    @classmethod
    def load(cls, path: Path) -> Self:
        saved = json.loads(path.read_text())
        self = cls(**saved["params"])
        self.features_, self.coef_ = saved["features"], np.array(saved["coef"])
        return self

    def library_versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}
