"""Metrics on bootstrap resamples of a holdout without copying its rows: what a family's optional
`resampled` method is built from (the contract: retrainer.models.base).

A resample is given by its counts: `counts[b, i]` is how many times row i is drawn in resample b. A
metric that is a mean over rows is then a weighted mean, `counts @ values / counts.sum(1)`: one
matrix-vector product for every resample at once, instead of B calls of `evaluate` on B expanded
copies of the holdout. Ratios of such sums give RMSE, R², precision, recall and F1; ROC AUC is a
weighted Mann-Whitney count over one sort of the scores. Each family's `resampled` equals its
`evaluate` on the expanded rows, `np.repeat(np.arange(n), counts[b])`, edge cases included
(tests/models/test_resampling.py; the conformance kit checks it for any family that offers it).

Resamples are processed in chunks of rows of `counts`, so that no temporary holds more than about
CHUNK_BYTES of floats whatever the holdout's size (1,000 resamples of 100,000 rows would be 800 MB).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

CHUNK_BYTES = 32 * 2**20  # per temporary; a chunk holds a few of them
EPS = float(np.finfo(float).eps)  # scikit-learn's log_loss clips float64 probabilities to [eps, 1 - eps]


def check_counts(counts: Any, n: int) -> np.ndarray:
    """The counts as a (resamples, n) integer matrix of non-negative draws, else ValueError saying why."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != n:
        raise ValueError(f"counts must be a (resamples, {n}) matrix for {n} holdout rows; got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"counts must be whole numbers of draws; got dtype {counts.dtype}")
    if counts.size and counts.min() < 0:
        raise ValueError("counts must be >= 0")
    return counts


def chunks(counts: np.ndarray, temporaries: int = 1) -> Iterator[slice]:
    """Slices of resamples small enough that `temporaries` float copies of a chunk fit in CHUNK_BYTES each."""
    resamples, n = counts.shape
    step = max(1, CHUNK_BYTES // (8 * max(n, 1) * temporaries))
    for start in range(0, resamples, step):
        yield slice(start, min(start + step, resamples))


def weighted_sums(counts: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """counts @ columns in float64, chunk by chunk: (B,) for one column of n values, (B, k) for (n, k)."""
    columns = np.asarray(columns, dtype=float)
    out = np.empty((len(counts), *columns.shape[1:]))
    for part in chunks(counts):
        out[part] = counts[part].astype(float) @ columns
    return out


def _divide(num: np.ndarray, den: np.ndarray, empty: float = np.nan) -> np.ndarray:
    """num / den, and `empty` where den is 0 (an empty resample; a class with no rows)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=float), np.asarray(den, dtype=float))
    out = np.full(num.shape, empty)
    np.divide(num, den, out=out, where=den != 0)
    return out


def weighted_mean(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The mean of `values` over each resample's drawn rows (NaN for an empty resample, as np.mean)."""
    return _divide(weighted_sums(counts, values), counts.sum(axis=1))


def weighted_rms(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """sqrt(mean(values²)) over each resample: RMSE from the errors."""
    return np.sqrt(weighted_mean(counts, np.square(np.asarray(values, dtype=float))))


def constant_draws(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether every row drawn in a resample holds one value (a constant target: R²'s special case)."""
    _, rank = np.unique(np.asarray(values), return_inverse=True)
    out = np.ones(len(counts), dtype=bool)
    if rank.size == 0 or rank.max() == 0:
        return out  # no rows, or one value in the whole holdout
    for part in chunks(counts, 2):
        drawn = counts[part] > 0  # an empty resample counts as constant: it holds no two values
        low, high = np.where(drawn, rank, rank.max() + 1).min(axis=1), np.where(drawn, rank, -1).max(axis=1)
        out[part] = (low == high) | ~drawn.any(axis=1)
    return out


def r2(counts: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
       constant: Literal["zero", "sklearn"]) -> np.ndarray:
    """1 - SSE / SST per resample. SST from sums of the target centred on the holdout's mean, which keeps
    the subtraction well conditioned. A resample whose target is constant has no SST: `zero` gives 0.0
    (the ctr family's rule), `sklearn` gives 1.0 for a perfect prediction and 0.0 otherwise, and NaN for
    fewer than two rows (`r2_score`)."""
    truth, predicted = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    err = predicted - truth
    centred = truth - truth.mean() if truth.size else truth
    sums = weighted_sums(counts, np.column_stack([err**2, centred, centred**2, err != 0]))
    totals = counts.sum(axis=1).astype(float)
    sst = sums[:, 2] - _divide(sums[:, 1] ** 2, totals, 0.0)
    out = 1.0 - _divide(sums[:, 0], sst)
    # A constant resample's SST is 0 up to rounding (~1e-16 of the sum of squares); only resamples that
    # close to 0 are looked at row by row, since a non-constant one may be that close too.
    flat = np.zeros(len(counts), dtype=bool)
    maybe = sst <= 1e-6 * sums[:, 2]
    flat[maybe] = constant_draws(counts[maybe], truth)
    out[flat] = 0.0 if constant == "zero" else (sums[flat, 3] == 0).astype(float)
    if constant == "sklearn":
        out[totals < 2] = np.nan
    return out


def roc_auc(counts: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC of `score` for the `positive` rows per resample: the weighted share of (positive, negative)
    pairs the score ranks right, a tie counting 1/2 (the Mann-Whitney U, equal to the trapezoidal area
    scikit-learn computes). NaN where a resample draws no positive or no negative row.

    The negatives are sorted once by score; where each positive's score falls among them (below, and
    tied) is the same in every resample. Per resample, a cumulative sum of the negatives' weights then
    gives every positive its count of negatives below plus half the tied ones: 2U is a sum of whole
    numbers, computed in integers, exactly."""
    score, positive = np.asarray(score, dtype=float), np.asarray(positive, dtype=bool)
    negatives = np.flatnonzero(~positive)
    negatives = negatives[np.argsort(score[negatives], kind="stable")]
    positives = np.flatnonzero(positive)
    below = np.searchsorted(score[negatives], score[positives], side="left")  # negatives scored lower
    not_above = np.searchsorted(score[negatives], score[positives], side="right")  # ... or tied
    out = np.full(len(counts), np.nan)
    for part in chunks(counts, 3):
        w = counts[part]
        cumulative = np.zeros((len(w), len(negatives) + 1), dtype=np.int64)
        np.cumsum(w[:, negatives], axis=1, out=cumulative[:, 1:])
        w_pos = w[:, positives]
        twice_u = np.einsum("bi,bi->b", w_pos, cumulative[:, below] + cumulative[:, not_above])
        pairs = w_pos.sum(axis=1) * cumulative[:, -1]
        out[part] = _divide(twice_u / 2.0, pairs)
    return out


def class_sums(counts: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
               classes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per resample and class (B, k each): true positives, rows predicted as the class, rows of the class."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    columns = [np.column_stack([(truth == c) & (predicted == c), predicted == c, truth == c]) for c in classes]
    sums = weighted_sums(counts, np.hstack(columns)).reshape(len(counts), len(classes), 3)
    return sums[:, :, 0], sums[:, :, 1], sums[:, :, 2]


def precision_recall_f1(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray,
                        metric: Literal["precision", "recall", "f1"]) -> np.ndarray:
    """Per class (B, k), scikit-learn's definitions with zero_division=0: 0 where the denominator is 0."""
    if metric == "precision":
        return _divide(tp, predicted, 0.0)
    if metric == "recall":
        return _divide(tp, actual, 0.0)
    return _divide(2 * tp, predicted + actual, 0.0)  # = 2PR / (P + R), 0 when both are 0


def macro(per_class: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The unweighted mean over the classes present in each resample (in its labels or its predictions),
    as scikit-learn's average='macro' takes them; NaN for an empty resample."""
    return _divide(np.where(present, per_class, 0.0).sum(axis=1), present.sum(axis=1))


def log_loss_rows(p_true: np.ndarray) -> np.ndarray:
    """Each row's log loss from the probability given to its true class, clipped as scikit-learn clips it."""
    return -np.log(np.clip(np.asarray(p_true, dtype=float), EPS, 1 - EPS))


def unknown(metric: str, names: Sequence[str]) -> ValueError:
    return ValueError(f"unknown metric {metric!r}; this family reports {', '.join(names)}")
