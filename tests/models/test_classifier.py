"""The classifier family's own promises: binary and multiclass from one family, its metrics against
scikit-learn's, probabilities, categorical features, fine-tuning and refused labels (the conformance
kit in test_families.py covers the contract, once per task)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from retrainer.config import load_settings
from retrainer.models.base import DataError, Prediction, Task, check_models
from retrainer.models.classifier import ClassifierFamily
from retrainer.models.testing import synthetic_data

SMALL = {"n_estimators": 40, "max_depth": 3}


def churn_data(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Churn driven by x1 and, strongly, by the `search` channel, which arrives as plain strings."""
    X = synthetic_data(ClassifierFamily, n=n, seed=seed).X
    X = X.assign(channel=X["channel"].astype(str))
    score = 2.0 * (X["x1"] - 0.5) + 2.5 * (X["channel"] == "search") - 0.8
    rng = np.random.default_rng(seed)
    return X, pd.Series((score + rng.logistic(0, 0.3, n) > 0).astype(float), name="label")  # float, as stored


def plan_data(n: int = 600) -> tuple[pd.DataFrame, pd.Series]:
    """Three plans (classes 0, 1, 2) chosen by x1 and the channel."""
    X, _ = churn_data(n)
    level = 3 * X["x1"] + 1.5 * (X["channel"] == "search")
    return X, pd.Series(np.digitize(level, [1.2, 2.4]).astype(float), name="label")


def proba_prediction(proba: list[list[float]], classes: tuple[int, ...]) -> Prediction:
    p = np.array(proba)
    return Prediction(np.asarray(classes)[p.argmax(axis=1)], p, classes)


def test_one_family_two_tasks_chosen_by_a_parameter() -> None:
    assert ClassifierFamily.task == Task.BINARY  # the class declares the default
    assert ClassifierFamily().task == Task.BINARY
    assert ClassifierFamily(task="multiclass").task == Task.MULTICLASS
    settings = load_settings(models={
        "churn": {"family": "classifier", "primary_metric": "log_loss"},
        "bad": {"family": "classifier", "params": {"task": "ternary"}, "primary_metric": "mae"},
    })
    assert check_models(settings.models) == [
        "models.bad.params.task: Input should be 'binary' or 'multiclass' (family classifier)",
        ("models.bad.primary_metric: 'mae' is not a metric of family classifier; "
         "choose one of roc_auc, log_loss, accuracy, precision, recall, f1"),
    ]


def test_binary_metrics_match_sklearn() -> None:
    y = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    p1 = np.array([0.1, 0.6, 0.8, 0.4, 0.9, 0.3, 0.55, 0.2])
    m = ClassifierFamily().evaluate(y.astype(float), proba_prediction(np.c_[1 - p1, p1].tolist(), (0, 1)))
    assert m.primary == "roc_auc" and m.higher_is_better is True
    predicted = (p1 > 0.5).astype(int)  # [0 1 1 0 1 0 1 0]: one false positive, one false negative
    assert m.values == pytest.approx({
        "accuracy": skm.accuracy_score(y, predicted),
        "precision": skm.precision_score(y, predicted),
        "recall": skm.recall_score(y, predicted),
        "f1": skm.f1_score(y, predicted),
        "roc_auc": skm.roc_auc_score(y, p1),
        "log_loss": skm.log_loss(y, p1),
    })
    assert m.values["accuracy"] == 0.75 and m.values["precision"] == 0.75 and m.values["recall"] == 0.75
    assert m.values["roc_auc"] == pytest.approx(14 / 16)  # 14 of the 16 (positive, negative) pairs ranked right


def test_multiclass_metrics_are_macro_averages_matching_sklearn() -> None:
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0])
    proba = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3], [0.6, 0.3, 0.1],
             [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2]]
    prediction = proba_prediction(proba, (0, 1, 2))
    m = ClassifierFamily(task="multiclass").evaluate(y, prediction)
    predicted = prediction.value
    assert m.values == pytest.approx({
        "accuracy": skm.accuracy_score(y, predicted),
        "precision": skm.precision_score(y, predicted, average="macro"),
        "recall": skm.recall_score(y, predicted, average="macro"),
        "f1": skm.f1_score(y, predicted, average="macro"),
        "roc_auc": skm.roc_auc_score(y, np.array(proba), multi_class="ovr", average="macro"),
        "log_loss": skm.log_loss(y, np.array(proba)),
    })
    # macro, not micro (7/9): the per-class precisions are 3/4, 2/3 and 1
    assert m.values["precision"] == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)


def test_a_holdout_without_every_class_still_scores() -> None:
    proba = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]]
    m = ClassifierFamily(task="multiclass").evaluate(np.array([0, 1, 0, 1]), proba_prediction(proba, (0, 1, 2)))
    p = np.array(proba)
    # ROC AUC over the classes the holdout holds (class 2 has no positive row to rank)
    expected = np.mean([skm.roc_auc_score([1, 0, 1, 0], p[:, 0]), skm.roc_auc_score([0, 1, 0, 1], p[:, 1])])
    assert m.values["roc_auc"] == pytest.approx(expected)
    assert m.values["log_loss"] == pytest.approx(skm.log_loss([0, 1, 0, 1], p, labels=[0, 1, 2]))
    # a single class leaves ROC AUC undefined (NaN, so the policy promotes nothing on it); the rest score
    single = ClassifierFamily().evaluate(np.zeros(3), proba_prediction([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2]], (0, 1)))
    assert math.isnan(single.values["roc_auc"]) and single.not_finite == ["roc_auc"]
    assert single.values["accuracy"] == pytest.approx(2 / 3)


def test_a_class_the_model_never_saw_counts_as_wrong() -> None:
    # the champion learned classes 0 and 1; the holdout now holds a 2: probability 0, clipped
    m = ClassifierFamily(task="multiclass").evaluate(
        np.array([0, 1, 2]), proba_prediction([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], (0, 1)))
    padded = np.array([[0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.6, 0.4, 0.0]])
    assert m.values["accuracy"] == pytest.approx(2 / 3)
    assert m.values["log_loss"] == pytest.approx(skm.log_loss([0, 1, 2], padded, labels=[0, 1, 2]))
    assert m.values["log_loss"] > 10  # -log(eps) / 3 dominates


def test_binary_probabilities_rank_the_churners_and_follow_a_categorical_feature() -> None:
    X, y = churn_data()
    est = ClassifierFamily(**SMALL).fit(X.iloc[:480], y.iloc[:480])
    assert est.classes_ == [0, 1] and est.categories_["channel"] == ["email", "feed", "search"]
    p = est.predict(X.iloc[480:])
    assert p.classes == (0, 1) and p.proba.shape == (120, 2)
    np.testing.assert_allclose(p.proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(p.value, p.proba.argmax(axis=1))
    search = (X["channel"].iloc[480:] == "search").to_numpy()
    assert p.proba[search, 1].mean() > p.proba[~search, 1].mean() + 0.3  # the channel carries the signal
    metrics = est.evaluate(y.iloc[480:], p)
    assert metrics.values["roc_auc"] > 0.85 and metrics.values["accuracy"] > 0.75


def test_multiclass_learns_its_classes_and_keeps_them_through_save(tmp_path: Path) -> None:
    X, y = plan_data()
    y = y.map({0.0: 0.0, 1.0: 2.0, 2.0: 5.0})  # classes need not be contiguous
    est = ClassifierFamily(**SMALL, task="multiclass").fit(X.iloc[:480], y.iloc[:480])
    assert est.classes_ == [0, 2, 5]
    p = est.predict(X.iloc[480:])
    assert p.classes == (0, 2, 5) and p.proba.shape == (120, 3) and set(p.value) <= {0, 2, 5}
    assert est.evaluate(y.iloc[480:], p).values["accuracy"] > 0.7
    est.save(tmp_path / "plan.json")
    loaded = ClassifierFamily.load(tmp_path / "plan.json")
    assert loaded.task == Task.MULTICLASS and loaded.classes_ == [0, 2, 5]
    np.testing.assert_allclose(loaded.predict(X.iloc[480:]).proba, p.proba)


def test_fine_tunes_from_a_parent_with_the_same_task_and_classes() -> None:
    X, y = churn_data()
    parent = ClassifierFamily(n_estimators=20, max_depth=3).fit(X.iloc[:300], y.iloc[:300])
    child = ClassifierFamily(n_estimators=10, max_depth=3).fit(X.iloc[300:], y.iloc[300:], parent=parent)
    assert child.model_.get_booster().num_boosted_rounds() == 30  # the parent's 20 trees and 10 more
    assert child.classes_ == parent.classes_ and child.features_ == parent.features_
    assert child.predict(X.iloc[300:]).proba.shape == (300, 2)

    Xp, plans = plan_data()
    three = ClassifierFamily(n_estimators=10, task="multiclass").fit(Xp, plans)
    with pytest.raises(DataError, match=r"parent's task and classes \(multiclass, \[0, 1, 2\]\)"):
        ClassifierFamily(n_estimators=10, task="multiclass").fit(Xp[plans < 2], plans[plans < 2], parent=three)
    with pytest.raises(DataError, match="parent's task and classes"):
        ClassifierFamily(n_estimators=10).fit(X, y, parent=three)


@pytest.mark.parametrize(("bad", "problem"), [(0.5, "0.5"), (-1.0, "-1"), (math.nan, "nan")])
def test_refuses_fractional_negative_and_missing_labels(bad: float, problem: str) -> None:
    X, y = churn_data(100)
    y = y.copy()
    y.iloc[7] = bad
    with pytest.raises(DataError, match=f"whole numbers 0, 1, ...; got {problem}"):
        ClassifierFamily(**SMALL).fit(X, y)
    with pytest.raises(DataError, match="whole numbers"):
        ClassifierFamily().evaluate(y, proba_prediction([[0.5, 0.5]] * 100, (0, 1)))


def test_refuses_labels_that_do_not_fit_the_task() -> None:
    X, plans = plan_data(300)
    with pytest.raises(DataError, match=r"binary classifier's labels are 0 and 1; got classes \[0, 1, 2\].*multiclass"):
        ClassifierFamily(**SMALL).fit(X, plans)
    with pytest.raises(DataError, match=r"classes \[1\]: a classifier needs two"):
        ClassifierFamily(**SMALL, task="multiclass").fit(X, pd.Series(np.ones(len(X))))
