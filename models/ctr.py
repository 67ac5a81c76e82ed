"""`ctr`: an XGBoost regressor for click-through rate (also ROAS), saved as XGBoost JSON.

Features are the numeric keys of each row's feature dict; the list is learned in fit (stored in the
saved model as a booster attribute), so predict refuses rows that miss one instead of guessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from models.base import LABEL, DataError, Metrics

DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "max_depth": 4,
    "learning_rate": 0.1,
    "subsample": 0.9,
    "random_state": 42,
    "n_jobs": 1,
}
WITHIN = 0.20  # "accurate" = prediction within ±20 % of the actual value


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    err = y_pred - y_true
    sst = float(np.sum((y_true - y_true.mean()) ** 2)) if len(y_true) else 0.0
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": 1.0 - float(np.sum(err**2)) / sst if sst > 0 else 0.0,
        "accuracy": float(np.mean(np.abs(err) <= WITHIN * np.abs(y_true))),
        "count": float(len(y_true)),
    }


class CTRFamily:
    name: ClassVar[str] = "ctr"
    algorithm: ClassVar[str] = "xgboost"
    artifact_suffix: ClassVar[str] = ".json"

    def __init__(self, **params: Any) -> None:
        self.params = {**DEFAULT_PARAMS, **params}

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def _matrix(self, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise DataError(f"missing feature column(s): {', '.join(missing)}")
        x = frame[features].to_numpy(dtype=float)
        if not np.isfinite(x).all():
            raise DataError("features contain NaN or infinite values")
        return x

    def fit(self, frame: pd.DataFrame) -> Self:
        from xgboost import XGBRegressor

        features = [c for c in frame.columns if c not in (LABEL, "event_time", "row_id")]
        if not features:
            raise DataError("no feature columns to train on")
        y = frame[LABEL].to_numpy(dtype=float)
        if not np.isfinite(y).all():
            raise DataError("labels contain NaN or infinite values")
        self.model_ = XGBRegressor(**self.params).fit(self._matrix(frame, features), y)
        self.features_ = features
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model_.predict(self._matrix(frame, self.features_)).astype(float)

    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray) -> Metrics:
        return Metrics(regression_metrics(y_true, y_pred), primary="mae", higher_is_better=False)

    def save(self, path: Path) -> None:
        booster = self.model_.get_booster()
        booster.set_attr(retrainer_features=json.dumps(self.features_), retrainer_params=json.dumps(self.params))
        booster.save_model(str(path))  # XGBoost's own JSON format: portable across versions

    @classmethod
    def load(cls, path: Path) -> Self:
        from xgboost import XGBRegressor

        model = XGBRegressor()
        model.load_model(str(path))
        booster = model.get_booster()
        features = booster.attr("retrainer_features")
        if features is None:
            raise DataError(f"{path} is not a retrainer ctr model (no feature list)")
        self = cls(**json.loads(booster.attr("retrainer_params") or "{}"))
        self.model_, self.features_ = model, json.loads(features)
        return self

    def library_versions(self) -> dict[str, str]:
        import sklearn
        import xgboost

        return {"xgboost": xgboost.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}
