"""`classifier`: an XGBoost classifier (churn, accept/reject, plan chosen), saved as XGBoost JSON.

One family, two tasks, chosen by the `task` hyper-parameter rather than guessed from the labels:
`binary` (the default: labels 0 and 1, 1 the positive class) or `multiclass` (labels 0..k-1). Fixing
it keeps every version's metrics defined the same way, and a stray label 2 in churn data is refused
instead of silently turning the model multiclass. The classes themselves are learned in fit, saved
with the model, and give `Prediction.classes`; `value` is the most probable class.

Labels are numbers, as `observations.label` holds them: whole and non-negative, else DataError.
String class names ("churned", "stayed") are future work: issue 7 §4 adds the feature schema that
will carry them.

Metrics (scikit-learn's definitions), on the holdout:
- accuracy: the share of rows whose predicted class is right;
- precision, recall, F1: of the positive class (1) for `binary`; for `multiclass` macro averages,
  the unweighted mean over the classes present in the labels or the predictions;
- ROC AUC, from the probabilities: `binary`, of the positive class; `multiclass`, one-vs-rest per
  class, macro-averaged over the classes the holdout holds (equal to `roc_auc_score(...,
  multi_class="ovr")` when it holds them all); NaN when the holdout holds a single class;
- log loss, from the probabilities, over the model's classes and any the holdout adds (a class the
  model never saw has probability 0, clipped as scikit-learn clips it).

The primary metric is ROC AUC: it ranks without a threshold and is unmoved by class imbalance
(churn of 3 % makes "never churns" 97 % accurate), and it is bounded, so the policy's relative
improvement stays meaningful, where log loss is unbounded and a few confident mistakes swing it.
A model's `primary_metric` may choose another, `log_loss` when calibrated probabilities matter.

Fine-tuning boosts on from a parent of the same task and the same classes: XGBoost cannot add a
class to, or leave one out of, trees already grown.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel

from retrainer.models import resampling
from retrainer.models.base import DataError, Live, Metrics, MetricSpec, Prediction, Task
from retrainer.models.xgb import XGBoostFamily, XGBParams


class ClassifierParams(XGBParams):
    task: Literal["binary", "multiclass"] = "binary"


def class_labels(y: Any) -> np.ndarray:
    """Labels as class numbers; a missing, fractional or negative label is refused, naming it."""
    values = np.asarray(y, dtype=float)
    bad = values[~np.isfinite(values) | (values < 0) | (values != np.round(values))]
    if len(bad):
        raise DataError(f"class labels must be whole numbers 0, 1, ...; got {bad[0]:g} "
                        f"({len(bad)} such label(s)); named classes are not supported yet")
    return values.astype(np.int64)


class ClassifierFamily(XGBoostFamily):
    name: ClassVar[str] = "classifier"
    task: ClassVar[Task] = Task.BINARY  # the default; an instance declares its configured task
    estimator: ClassVar[str] = "XGBClassifier"
    Params: ClassVar[type[BaseModel]] = ClassifierParams
    learned: ClassVar[dict[str, str | None]] = {**XGBoostFamily.learned, "classes": None}
    metric_spec: ClassVar[MetricSpec] = MetricSpec(
        names=("roc_auc", "log_loss", "accuracy", "precision", "recall", "f1"), primary="roc_auc",
        higher_is_better=frozenset({"roc_auc", "accuracy", "precision", "recall", "f1"}), live=Live.CLASSIFICATION,
        units={"accuracy": "fraction", "precision": "fraction", "recall": "fraction", "f1": "fraction",
               "log_loss": "nats"},
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.task = Task(self.params["task"])  # the instance's task narrows the class's default

    def _xgb_params(self) -> dict[str, Any]:
        # `task` is ours (XGBoost's own `task` is its command line's); XGBoost picks binary:logistic
        # or multi:softprob from the number of classes it is given.
        return {k: v for k, v in self.params.items() if k != "task"}

    def fit(self, X: pd.DataFrame, y: pd.Series, time: pd.Series | None = None, parent: Self | None = None) -> Self:
        labels = class_labels(y)
        classes = sorted(int(c) for c in np.unique(labels))
        if self.task == Task.BINARY and not set(classes) <= {0, 1}:
            raise DataError(f"a binary classifier's labels are 0 and 1; got classes {classes} "
                            "(set params.task: multiclass for more classes)")
        if len(classes) < 2:
            raise DataError(f"the labels hold the classes {classes}: a classifier needs two at least")
        if parent is not None and (parent.task, parent.classes_) != (self.task, classes):
            raise DataError(f"fine-tuning needs the parent's task and classes ({parent.task}, {parent.classes_}); "
                            f"these rows give ({self.task}, {classes}): train afresh")
        self.classes_ = classes
        self._boost(X, np.searchsorted(classes, labels), parent)  # XGBoost wants the classes as 0..m-1
        return self

    def predict(self, X: pd.DataFrame, time: pd.Series | None = None) -> Prediction:
        proba = self.model_.predict_proba(self._matrix(X)).astype(float)
        proba /= proba.sum(axis=1, keepdims=True)  # XGBoost's float32 rows drift from 1 by ~1e-7
        return Prediction(np.asarray(self.classes_)[proba.argmax(axis=1)], proba, tuple(self.classes_))

    def evaluate(self, y: Any, prediction: Prediction) -> Metrics:
        from sklearn import metrics as skm

        truth, predicted, labels, proba = self._layout(y, prediction)
        average = "binary" if self.task == Task.BINARY else "macro"
        values = {
            "roc_auc": _roc_auc(truth, proba, labels, self.task),
            "log_loss": skm.log_loss(truth, proba, labels=labels),
            "accuracy": skm.accuracy_score(truth, predicted),
            "precision": skm.precision_score(truth, predicted, average=average, zero_division=0),
            "recall": skm.recall_score(truth, predicted, average=average, zero_division=0),
            "f1": skm.f1_score(truth, predicted, average=average, zero_division=0),
        }
        return Metrics.of(values, self.metric_spec)

    def _layout(self, y: Any, prediction: Prediction) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
        """The true and predicted classes, the labels (the model's classes and any the holdout adds) and
        the probabilities laid out over them (a class the model never saw: probability 0)."""
        truth = class_labels(y)
        predicted = np.asarray(prediction.value, dtype=np.int64)
        labels = sorted(set(prediction.classes or ()) | {int(c) for c in np.unique(truth)})
        if self.task == Task.BINARY and not set(labels) <= {0, 1}:
            raise DataError(f"a binary classifier's labels are 0 and 1; the holdout holds {labels}")
        proba = np.zeros((len(truth), len(labels)))  # the prediction's columns, laid out over `labels`
        for j, c in enumerate(prediction.classes or ()):
            proba[:, labels.index(int(c))] = prediction.proba[:, j]
        return truth, predicted, labels, proba

    def resampled(self, y: Any, prediction: Prediction, metric: str, counts: np.ndarray) -> np.ndarray:
        truth, predicted, labels, proba = self._layout(y, prediction)
        counts = resampling.check_counts(counts, len(truth))
        if metric == "accuracy":
            return resampling.weighted_mean(counts, truth == predicted)
        if metric == "log_loss":
            p_true = proba[np.arange(len(truth)), np.searchsorted(labels, truth)]
            return resampling.weighted_mean(counts, resampling.log_loss_rows(p_true))
        if metric == "roc_auc":  # as _roc_auc: per class the resample holds and lacks in some row, averaged
            scored = [c for c in ([1] if self.task == Task.BINARY else labels) if c in labels]
            aucs = np.stack([resampling.roc_auc(counts, truth == c, proba[:, labels.index(c)]) for c in scored]
                            or [np.full(len(counts), np.nan)])
            defined = np.isfinite(aucs)
            return np.where(defined.any(axis=0), np.where(defined, aucs, 0.0).sum(axis=0)
                            / np.maximum(defined.sum(axis=0), 1), np.nan)
        if metric in ("precision", "recall", "f1"):
            classes = [1] if self.task == Task.BINARY else sorted({*np.unique(truth), *np.unique(predicted)})
            tp, npred, ntrue = resampling.class_sums(counts, truth, predicted, classes)
            per_class = resampling.precision_recall_f1(tp, npred, ntrue, metric)
            if self.task == Task.BINARY:  # average="binary": class 1's alone
                return np.where(counts.sum(axis=1) > 0, per_class[:, 0], np.nan)
            return resampling.macro(per_class, (npred + ntrue) > 0)
        raise resampling.unknown(metric, self.metric_spec.names)


def _roc_auc(truth: np.ndarray, proba: np.ndarray, labels: list[int], task: Task) -> float:
    """One-vs-rest ROC AUC of each class the holdout holds and lacks in some row (binary: class 1 only),
    averaged; NaN where there is none, since a single class has no ranking to score."""
    from sklearn.metrics import roc_auc_score

    scored = [1] if task == Task.BINARY else labels
    aucs = [roc_auc_score(truth == c, proba[:, labels.index(c)]) for c in scored
            if c in labels and 0 < int((truth == c).sum()) < len(truth)]
    return float(np.mean(aucs)) if aucs else math.nan
