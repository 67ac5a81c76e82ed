"""Is the candidate better than the reference beyond the holdout's noise? The paired bootstrap.

Both versions are scored on the same B resamples of the holdout rows (drawn with replacement, n of
n), so what the rows share (an easy week, a hard segment) cancels and only the difference between
the versions varies. Per resample the relative improvement of the primary metric is computed as
`Metrics.improvement_pct` computes it (+ is better); its (1-c)/2 and (1+c)/2 quantiles are the
interval, and the one-sided p-value is the share of resamples where the candidate is not better.

A family's `resampled` (retrainer.models.base) scores all resamples in a few vectorised passes; a
family without it is scored by `evaluate` on each expanded resample (correct, slower). Resamples are
drawn and scored in chunks, so a 100,000-row holdout never holds 1,000 x 100,000 counts at once.

Resamples whose improvement is not finite (a metric undefined on that resample, such as ROC AUC on
rows of one class, or a zero reference) are dropped and counted. The bounds assume the worst for
them: the lower bound is taken as if every dropped resample lay below it, the upper as if above
(and the p-value counts them as "not better"). With no drops this is the plain percentile interval;
with more than (1-c)/2 of them dropped the bounds are NaN, and the caller treats the test as
inconclusive. benchmarks/promotion_gate.py measures the gate's false promotions and power.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from retrainer.models.base import Family, Prediction, Task

METHOD = "paired_bootstrap"
CHUNK_BYTES = 16 * 2**20  # the int64 counts of one chunk of resamples (its draws take about as much again)


@dataclass(frozen=True)
class PairedTest:
    method: str  # "paired_bootstrap"
    metric: str
    point_pct: float  # relative improvement of candidate over reference on the full holdout, + = better
    lower_pct: float  # (1-confidence)/2 quantile of the resampled relative improvement
    upper_pct: float  # (1+confidence)/2 quantile
    confidence: float
    resamples: int
    rows: int
    p_value: float  # one-sided: share of resamples with improvement <= 0, (1 + k) / (B + 1)
    dropped: int = 0  # resamples whose improvement is not finite (see the module docstring)

    @property
    def conclusive(self) -> bool:
        return math.isfinite(self.lower_pct) and math.isfinite(self.upper_pct)

    def to_json(self) -> dict[str, Any]:
        """Finite floats or None: JSON and PostgreSQL's JSONB refuse NaN and infinity."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairedTest:
        floats = ("point_pct", "lower_pct", "upper_pct", "confidence", "p_value")
        return cls(**{k: (math.nan if k in floats and v is None else v) for k, v in data.items()})


def improvement_pct(new: np.ndarray, old: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Metrics.improvement_pct over arrays: 100 * the gain relative to |old|; a zero `old` gives 0 when
    `new` equals it, else +-inf by direction; NaN where either is NaN."""
    new, old = np.asarray(new, dtype=float), np.asarray(old, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):  # inf - inf, x / 0: handled below
        delta = (new - old) if higher_is_better else (old - new)
        out = 100.0 * delta / np.abs(old)
    zero = old == 0
    out[zero] = np.where(new[zero] == 0, 0.0, np.where(delta[zero] > 0, math.inf, -math.inf))
    out[np.isnan(new) | np.isnan(old)] = np.nan
    return out


def paired_bootstrap(family: Family, y: pd.Series | np.ndarray, candidate: Prediction, reference: Prediction,
                     metric: str, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> PairedTest:
    """The paired bootstrap of `metric` for `candidate` against `reference` on the holdout `y`. The
    same seed draws the same resamples: the decision on a holdout is reproducible."""
    spec = family.metric_spec
    if metric not in spec.names:
        raise ValueError(f"unknown metric {metric!r}; the family reports {', '.join(spec.names)}")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1; got {resamples}, {confidence}")
    n = len(y)
    if len(candidate) != n or len(reference) != n:
        raise ValueError(f"{len(candidate)} candidate and {len(reference)} reference predictions for {n} holdout rows")
    higher = spec.better_is_higher(metric)
    point = improvement_pct(np.array([family.evaluate(y, candidate).values[metric]]),
                            np.array([family.evaluate(y, reference).values[metric]]), higher)[0]
    score = _scorer(family, y, metric)
    rng = np.random.default_rng(seed)
    step = max(1, CHUNK_BYTES // (8 * max(n, 1)))
    gains = []
    for start in range(0, resamples, step):
        counts = _draw(rng, min(step, resamples - start), n)
        gains.append(improvement_pct(score(candidate, counts), score(reference, counts), higher))
    gain = np.concatenate(gains)
    finite = np.sort(gain[np.isfinite(gain)])
    dropped = resamples - len(finite)
    alpha = 1.0 - confidence
    # Positions in the sorted B resamples; the dropped ones are put where they hurt (module docstring).
    lower = _at(finite, alpha / 2 * (resamples - 1) - dropped)
    upper = _at(finite, (1 - alpha / 2) * (resamples - 1))
    p_value = (1 + int((finite <= 0).sum()) + dropped) / (resamples + 1)
    return PairedTest(METHOD, metric, float(point), lower, upper, confidence, resamples, n, p_value, dropped)


def naive_baseline(family: Family, y_train: pd.Series | np.ndarray, rows: int) -> Prediction:
    """A constant prediction for `rows` rows, what "the first model must beat a constant" compares with:
    the training median for regression and forecasts; for classifiers the majority class, with the
    training class frequencies as the probabilities (ties: the smallest class)."""
    values = np.asarray(y_train)
    if len(values) == 0:
        raise ValueError("no training labels to build a constant prediction from")
    if family.task in (Task.BINARY, Task.MULTICLASS):
        classes, freq = np.unique(values, return_counts=True)
        if np.issubdtype(classes.dtype, np.number) and np.all(classes == np.round(classes)):
            classes = classes.astype(np.int64)  # labels arrive as floats (observations.label); classes are ints
        proba = np.tile(freq / freq.sum(), (rows, 1))
        return Prediction(np.full(rows, classes[int(freq.argmax())]), proba, tuple(c.item() for c in classes))
    constant = np.full(rows, float(np.median(values.astype(float))))
    if family.task == Task.FORECAST:
        return Prediction(constant, lower=constant.copy(), upper=constant.copy())
    return Prediction(constant)


def _draw(rng: np.random.Generator, resamples: int, n: int) -> np.ndarray:
    """(resamples, n) counts: each resample draws n rows uniformly with replacement."""
    rows = rng.integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), dtype=np.int64)
    rows += np.arange(resamples)[:, None] * n
    return np.bincount(rows.ravel(), minlength=resamples * n).reshape(resamples, n)


def _scorer(family: Family, y: Any, metric: str) -> Any:
    """(prediction, counts) -> the metric per resample: the family's `resampled`, else `evaluate` per resample."""
    fast = getattr(family, "resampled", None)
    if callable(fast):
        return lambda prediction, counts: np.asarray(fast(y, prediction, metric, counts), dtype=float)
    take = (lambda rows: y.iloc[rows]) if isinstance(y, pd.Series) else (lambda rows: np.asarray(y)[rows])

    def slow(prediction: Prediction, counts: np.ndarray) -> np.ndarray:
        index = np.arange(counts.shape[1])
        expanded = (np.repeat(index, c) for c in counts)
        return np.array([family.evaluate(take(rows), prediction.select(rows)).values[metric] for rows in expanded])

    return slow


def _at(ordered: np.ndarray, position: float) -> float:
    """The value at a fractional position of sorted values, interpolated linearly (np.quantile's default);
    NaN outside them."""
    if not len(ordered) or position < 0 or position > len(ordered) - 1:
        return math.nan
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return float(ordered[below] + (ordered[above] - ordered[below]) * (position - below))
