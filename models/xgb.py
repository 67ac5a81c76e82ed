"""What the XGBoost families (ctr, regressor, classifier) share, saved as XGBoost JSON.

Numeric, categorical (XGBoost's native categorical splits) and boolean features. The feature list
and each categorical feature's categories are learned in fit and saved in the model, so predict
refuses rows that miss one instead of guessing, and codes a category the same way it was trained.
Fine-tunes by boosting on from a parent version's trees, with the parent's columns and codes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from retrainer.config import get_settings
from retrainer.models.base import DataError, FeatureType, Prediction, Task, learn_categories


class XGBParams(BaseModel):
    """The hyper-parameters retrainer passes to XGBoost; anything else is refused when the
    configuration loads, naming the key."""

    model_config = ConfigDict(extra="forbid")
    n_estimators: int = Field(200, ge=1, le=100_000)
    max_depth: int = Field(4, ge=1, le=32)
    learning_rate: float = Field(0.1, gt=0, le=1)
    subsample: float = Field(0.9, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    reg_alpha: float = Field(0.0, ge=0)
    max_cat_to_onehot: int = Field(4, ge=1)
    random_state: int = 42
    # Threads inside one worker child (the child count is the other parallelism); None: the settings'
    # worker_threads, so one setting sizes every family's threads.
    n_jobs: int | None = Field(None, ge=1)


class XGBoostFamily:
    """The matrix, fit (fresh or boosting on), save and load, for any xgboost.sklearn estimator."""

    name: ClassVar[str]
    algorithm: ClassVar[str] = "xgboost"
    artifact_suffix: ClassVar[str] = ".json"
    feature_types: ClassVar[frozenset[FeatureType]] = frozenset(FeatureType)
    needs_time: ClassVar[bool] = False
    can_fine_tune: ClassVar[bool] = True
    Params: ClassVar[type[BaseModel]] = XGBParams
    estimator: ClassVar[str]  # the xgboost class that learns: "XGBRegressor", "XGBClassifier"
    # What fit learns besides the trees, kept in the booster's attributes as retrainer_<name>, with
    # its value when an older artifact lacks it (None: required).
    learned: ClassVar[dict[str, str | None]] = {"features": None, "categories": "{}"}

    def __init__(self, **params: Any) -> None:
        self.params = {**self.Params().model_dump(), **params}
        if self.params.get("n_jobs", 0) is None:
            self.params["n_jobs"] = get_settings().worker_threads

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def _xgb_params(self) -> dict[str, Any]:
        """The hyper-parameters XGBoost itself takes (a family may hold more of its own)."""
        return dict(self.params)

    def _matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [f for f in self.features_ if f not in X.columns]
        if missing:
            raise DataError(f"missing feature column(s): {', '.join(missing)}")
        out = {}
        for name in self.features_:
            column = X[name]
            if name in self.categories_:  # fit's categories, in fit's order: the codes the trees split on
                known = self.categories_[name]
                text = column.astype("string").astype(object)
                out[name] = pd.Categorical(text.where(text.isin(known)), categories=known)  # unseen: missing
                continue
            values = column.to_numpy(dtype=float)
            if not np.isfinite(values).all():
                raise DataError(f"feature {name!r} contains NaN or infinite values")
            out[name] = values
        return pd.DataFrame(out, index=X.index)

    def _learn_columns(self, X: pd.DataFrame) -> None:
        if X.shape[1] == 0:
            raise DataError("no feature columns to train on")
        self.features_ = list(X.columns)
        self.categories_ = learn_categories(X)

    def _boost(self, X: pd.DataFrame, target: np.ndarray, parent: Self | None) -> None:
        import xgboost

        if parent is not None:  # boost on: the parent's columns and codes, more trees
            self.features_, self.categories_ = parent.features_, parent.categories_
        else:
            self._learn_columns(X)
        model = getattr(xgboost, self.estimator)(**self._xgb_params(), enable_categorical=True, tree_method="hist")
        base = parent.model_.get_booster() if parent is not None else None
        self.model_ = model.fit(self._matrix(X), target, xgb_model=base)

    def save(self, path: Path) -> None:
        booster = self.model_.get_booster()
        booster.set_attr(retrainer_params=json.dumps(self.params),
                         **{f"retrainer_{name}": json.dumps(getattr(self, f"{name}_")) for name in self.learned})
        booster.save_model(str(path))  # XGBoost's own JSON format: portable across versions

    @classmethod
    def load(cls, path: Path) -> Self:
        import xgboost

        model = getattr(xgboost, cls.estimator)()
        model.load_model(str(path))
        booster = model.get_booster()
        self = cls(**json.loads(booster.attr("retrainer_params") or "{}"))
        self.model_ = model
        for name, default in cls.learned.items():
            text = booster.attr(f"retrainer_{name}") or default
            if text is None:
                raise DataError(f"{path} is not a retrainer {cls.name} model (no {name})")
            setattr(self, f"{name}_", json.loads(text))
        return self

    def library_versions(self) -> dict[str, str]:
        import sklearn
        import xgboost

        return {"xgboost": xgboost.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}


class XGBoostRegression(XGBoostFamily):
    """What every XGBoost regression family shares; a family adds its name, metric spec and evaluate."""

    task: ClassVar[Task] = Task.REGRESSION
    estimator: ClassVar[str] = "XGBRegressor"

    def fit(self, X: pd.DataFrame, y: pd.Series, time: pd.Series | None = None, parent: Self | None = None) -> Self:
        target = np.asarray(y, dtype=float)
        if not np.isfinite(target).all():
            raise DataError("labels contain NaN or infinite values")
        self._boost(X, target, parent)
        return self

    def predict(self, X: pd.DataFrame, time: pd.Series | None = None) -> Prediction:
        return Prediction(self.model_.predict(self._matrix(X)).astype(float))
