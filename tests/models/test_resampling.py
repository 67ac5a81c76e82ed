"""Each family's `resampled` equals its `evaluate` on the expanded rows of each resample, edge cases
included (retrainer.models.resampling; the conformance kit checks the same on fitted models)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from retrainer.models import resampling
from retrainer.models.base import Prediction
from retrainer.models.classifier import ClassifierFamily
from retrainer.models.ctr import CTRFamily
from retrainer.models.regressor import RegressorFamily
from retrainer.models.timing import TimingFamily


def draws(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])


def expected(family: Any, y: Any, prediction: Prediction, counts: np.ndarray) -> list[dict[str, float]]:
    """`evaluate` on each resample's expanded rows (warnings of degenerate resamples are evaluate's own)."""
    out = []
    for c in counts:
        rows = np.repeat(np.arange(len(c)), c)
        truth = y.iloc[rows] if isinstance(y, pd.Series) else np.asarray(y)[rows]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(family.evaluate(truth, prediction.select(rows)).values)
    return out


def assert_agrees(family: Any, y: Any, prediction: Prediction, counts: np.ndarray) -> None:
    want = expected(family, y, prediction, counts)
    for metric in family.metric_spec.names:
        got = family.resampled(y, prediction, metric, counts)
        assert got.shape == (len(counts),)
        np.testing.assert_allclose(got, [w[metric] for w in want], rtol=1e-9, atol=1e-12, equal_nan=True,
                                   err_msg=f"{type(family).__name__} {metric}")


def regression_case(n: int = 300, seed: int = 0) -> tuple[pd.Series, Prediction]:
    rng = np.random.default_rng(seed)
    y = np.round(rng.gamma(2.0, 0.02, n), 3)  # rounded: ties and zeros-free CTR-like values
    predicted = np.round(y + rng.normal(0, 0.01, n), 3)
    return pd.Series(y, index=np.arange(n) * 3 + 11), Prediction(predicted)  # an index that is not 0..n-1


def binary_case(n: int = 300, seed: int = 0) -> tuple[np.ndarray, Prediction]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    p1 = np.round(np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1), 1)  # coarse: many tied scores
    return y, Prediction((p1 > 0.5).astype(int), np.c_[1 - p1, p1], (0, 1))


def multiclass_case(n: int = 300, seed: int = 0, classes: tuple[int, ...] = (0, 1, 2)) -> tuple[np.ndarray, Prediction]:
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 1, 2, 3], n, p=[0.5, 0.3, 0.15, 0.05])  # class 3: one the model may never have seen
    logits = rng.normal(0, 1, (n, len(classes))) + 1.5 * (y[:, None] == np.array(classes)[None, :])
    proba = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 2)
    proba /= proba.sum(axis=1, keepdims=True)
    return y.astype(float), Prediction(np.asarray(classes)[proba.argmax(axis=1)], proba, classes)


@pytest.mark.parametrize("family", [CTRFamily(), RegressorFamily()], ids=["ctr", "regressor"])
def test_regression_metrics_agree_with_evaluate(family: Any) -> None:
    y, p = regression_case()
    assert_agrees(family, y, p, draws(len(y), 40))


def test_timing_metrics_agree_with_evaluate() -> None:
    rng = np.random.default_rng(3)
    y = np.clip(rng.normal(12, 8, 400), 0, None)
    assert_agrees(TimingFamily(), y, Prediction(np.clip(y + rng.normal(0, 7, 400), 0, None)), draws(400, 40))
    far = Prediction(y + 150.0)  # normalised MAE clipped at 1: overall_score from within_6h alone
    assert_agrees(TimingFamily(), y, far, draws(400, 5))


def test_binary_classifier_metrics_agree_with_evaluate() -> None:
    y, p = binary_case()
    assert_agrees(ClassifierFamily(), y, p, draws(len(y), 40))


@pytest.mark.parametrize("classes", [(0, 1, 2), (0, 1, 2, 3)], ids=["a-class-the-model-never-saw", "all-classes"])
def test_multiclass_metrics_agree_with_evaluate(classes: tuple[int, ...]) -> None:
    y, p = multiclass_case(classes=classes)
    assert_agrees(ClassifierFamily(task="multiclass"), y, p, draws(len(y), 40))


def test_small_resamples_drop_classes_and_leave_metrics_undefined_as_evaluate_does() -> None:
    # 12 rows: resamples regularly miss a class (macro averages change their classes) or hold one only
    y, p = multiclass_case(n=12, seed=5)
    assert_agrees(ClassifierFamily(task="multiclass"), y, p, draws(12, 200, seed=1))
    yb, pb = binary_case(n=8, seed=2)
    assert_agrees(ClassifierFamily(), yb, pb, draws(8, 200, seed=1))


def test_degenerate_resamples() -> None:
    n = 50
    one_row = np.zeros((1, n), dtype=np.int64)
    one_row[0, 7] = n  # one row drawn n times: a constant target, one class
    empty = np.zeros((1, n), dtype=np.int64)
    for family, (y, p) in [(CTRFamily(), regression_case(n)), (RegressorFamily(), regression_case(n)),
                           (ClassifierFamily(), binary_case(n)), (ClassifierFamily(task="multiclass"), multiclass_case(n))]:
        assert_agrees(family, y, p, np.vstack([one_row, np.ones((1, n), dtype=np.int64)]))
        for metric in family.metric_spec.names:  # no rows: NaN (R² of ctr: 0, as evaluate on no rows)
            value = family.resampled(y, p, metric, empty)[0]
            assert np.isnan(value) or (metric == "r2" and isinstance(family, CTRFamily) and value == 0.0)
    # one row drawn n times: R² of a constant target, decided on the values (0.1's float mean is an ulp off)
    y = np.full(n, 0.1)
    for family in (CTRFamily(), RegressorFamily()):
        assert_agrees(family, y, Prediction(y + 0.01), draws(n, 3))
        assert_agrees(family, y, Prediction(y.copy()), draws(n, 3))
    assert RegressorFamily().resampled(y, Prediction(y.copy()), "r2", draws(n, 2)).tolist() == [1.0, 1.0]
    assert CTRFamily().resampled(y, Prediction(y + 0.01), "r2", draws(n, 2)).tolist() == [0.0, 0.0]
    # a single holdout row: r2_score's NaN, the ctr family's 0
    assert np.isnan(RegressorFamily().resampled([0.1], Prediction(np.array([0.2])), "r2", [[1]])[0])
    assert_agrees(RegressorFamily(), np.array([0.1]), Prediction(np.array([0.2])), np.array([[1]]))


def test_roc_auc_is_the_weighted_mann_whitney_count_with_ties_halved() -> None:
    positive = np.array([True, False, True, False, True])
    score = np.array([0.9, 0.9, 0.3, 0.1, 0.5])
    counts = np.array([[1, 1, 1, 1, 1], [2, 1, 0, 3, 0], [0, 1, 0, 1, 0]])
    # resample 1: positives 0.9, 0.3, 0.5 against negatives 0.9 (a tie: 1/2) and 0.1: (0.5 + 1 + 0 + 1 + 0 + 1) / 6
    # resample 2: positive 0.9 (x2) against 0.9 (x1, tie) and 0.1 (x3): 2 * (0.5 + 3) / (2 * 4)
    got = resampling.roc_auc(counts, positive, score)
    np.testing.assert_allclose(got[:2], [3.5 / 6, 7 / 8])
    assert got[0] == pytest.approx(skm.roc_auc_score(positive, score))
    assert np.isnan(got[2])  # no positive drawn


def test_chunks_give_the_same_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    y, p = binary_case(n=500)
    family = ClassifierFamily()
    counts = draws(500, 30)
    whole = {m: family.resampled(y, p, m, counts) for m in family.metric_spec.names}
    yr, pr = regression_case(n=500)
    whole_r2 = CTRFamily().resampled(yr, pr, "r2", counts)
    monkeypatch.setattr(resampling, "CHUNK_BYTES", 8 * 500 * 2)  # a chunk or two of resamples at a time
    assert len(list(resampling.chunks(counts))) == 15
    for metric, values in whole.items():
        np.testing.assert_allclose(family.resampled(y, p, metric, counts), values, rtol=1e-12)  # BLAS: ulps
    np.testing.assert_allclose(CTRFamily().resampled(yr, pr, "r2", counts), whole_r2, rtol=1e-12)


def test_refuses_malformed_counts_and_unknown_metrics() -> None:
    y, p = regression_case(n=10)
    with pytest.raises(ValueError, match=r"\(resamples, 10\) matrix for 10 holdout rows; got shape \(10,\)"):
        CTRFamily().resampled(y, p, "mae", np.ones(10, dtype=int))
    with pytest.raises(ValueError, match="whole numbers of draws; got dtype float64"):
        CTRFamily().resampled(y, p, "mae", np.ones((2, 10)))
    with pytest.raises(ValueError, match=">= 0"):
        CTRFamily().resampled(y, p, "mae", -np.ones((2, 10), dtype=int))
    with pytest.raises(ValueError, match="unknown metric 'mse'; this family reports mae, rmse, r2, accuracy"):
        CTRFamily().resampled(y, p, "mse", np.ones((2, 10), dtype=int))
