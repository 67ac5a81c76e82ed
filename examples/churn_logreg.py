"""A complete model family in one file: a churn classifier on scikit-learn's logistic regression.

This is the README's "Bring your own model" example. Register it from your own package's
pyproject.toml, and name it in retrainer.yaml:

    [project.entry-points."retrainer.models"]
    churn_logreg = "churn_logreg:ChurnLogReg"

    models:
      churn:
        family: churn_logreg
        params: {C: 0.5}
        features: {plan: categorical, seats: numeric, monthly_spend: numeric, annual: boolean}

Check it as retrainer checks its own families (tests/test_examples.py does exactly this):

    from retrainer.models.testing import check_family
    check_family(ChurnLogReg)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import sklearn
from pydantic import BaseModel, ConfigDict, Field
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from retrainer.models.base import (
    DataError,
    FeatureType,
    Live,
    Metrics,
    MetricSpec,
    Prediction,
    Task,
    learn_categories,
)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown key stops retrainer at start-up, named
    C: float = Field(1.0, gt=0)  # inverse regularisation strength, as scikit-learn names it
    max_iter: int = Field(500, ge=10)


class ChurnLogReg:
    name: ClassVar[str] = "churn_logreg"
    algorithm: ClassVar[str] = "logistic_regression"
    artifact_suffix: ClassVar[str] = ".json"
    task: ClassVar[Task] = Task.BINARY
    feature_types: ClassVar[frozenset[FeatureType]] = frozenset(FeatureType)  # numeric, categorical, boolean
    needs_time: ClassVar[bool] = False
    can_fine_tune: ClassVar[bool] = True  # warm start from the parent's coefficients
    metric_spec: ClassVar[MetricSpec] = MetricSpec(
        names=("roc_auc", "log_loss", "accuracy"), primary="roc_auc",
        higher_is_better=frozenset({"roc_auc", "accuracy"}), live=Live.CLASSIFICATION)
    Params: ClassVar[type[BaseModel]] = Params

    def __init__(self, **params: Any) -> None:
        self.params = Params(**params).model_dump()

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        """Numbers and booleans as they are, each categorical one-hot over the categories seen in fit
        (a category never seen is all zeros: the model's baseline, not an error)."""
        missing = [f for f in self.features_ if f not in X.columns]
        if missing:
            raise DataError(f"missing feature column(s): {', '.join(missing)}")
        parts = []
        for name in self.features_:
            if name in self.categories_:
                text = X[name].astype(str).to_numpy()
                parts += [(text == c).astype(float) for c in self.categories_[name]]
            else:
                parts.append(X[name].to_numpy(dtype=float))
        x = np.column_stack(parts) if parts else np.empty((len(X), 0))
        if not np.isfinite(x).all():
            raise DataError("features contain NaN or infinite values")
        return x

    def fit(self, X: pd.DataFrame, y: pd.Series, time: pd.Series | None = None, parent: Self | None = None) -> Self:
        labels = np.asarray(y, dtype=float)
        if not set(np.unique(labels)) <= {0.0, 1.0}:
            raise DataError("churn labels are 0 (stayed) and 1 (churned)")
        if len(np.unique(labels)) < 2:
            raise DataError("the labels hold one class only: a classifier needs both")
        self.features_ = list(X.columns)
        self.categories_ = learn_categories(X)
        model = LogisticRegression(C=self.params["C"], max_iter=self.params["max_iter"])
        x = self._matrix(X)
        if parent is not None and parent.features_ == self.features_ and parent.categories_ == self.categories_:
            model.set_params(warm_start=True)  # continue from the parent's solution
            model.coef_, model.intercept_, model.classes_ = parent.coef_.copy(), parent.intercept_.copy(), np.array([0, 1])
        model.fit(x, labels.astype(int))
        self.coef_, self.intercept_ = model.coef_, model.intercept_
        return self

    def predict(self, X: pd.DataFrame, time: pd.Series | None = None) -> Prediction:
        p1 = 1.0 / (1.0 + np.exp(-(self._matrix(X) @ self.coef_[0] + self.intercept_[0])))
        proba = np.column_stack([1.0 - p1, p1])
        return Prediction(proba.argmax(axis=1), proba, (0, 1))

    def evaluate(self, y: Any, prediction: Prediction) -> Metrics:
        truth = np.asarray(y, dtype=int)
        p1 = prediction.proba[:, 1]
        both = len(np.unique(truth)) == 2  # ROC AUC needs both classes in the holdout
        return Metrics.of({
            "roc_auc": float(skm.roc_auc_score(truth, p1)) if both else float("nan"),
            "log_loss": float(skm.log_loss(truth, p1, labels=[0, 1])),
            "accuracy": float(skm.accuracy_score(truth, prediction.value)),
        }, self.metric_spec)

    def save(self, path: Path) -> None:  # plain JSON: portable across versions, nothing to unpickle
        path.write_text(json.dumps({"params": self.params, "features": self.features_, "categories": self.categories_,
                                    "coef": self.coef_.tolist(), "intercept": self.intercept_.tolist()}))

    @classmethod
    def load(cls, path: Path) -> Self:
        saved = json.loads(path.read_text())
        self = cls(**saved["params"])
        self.features_, self.categories_ = saved["features"], saved["categories"]
        self.coef_, self.intercept_ = np.array(saved["coef"]), np.array(saved["intercept"])
        return self

    def library_versions(self) -> dict[str, str]:
        return {"scikit-learn": sklearn.__version__, "numpy": np.__version__}
