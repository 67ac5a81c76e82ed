"""retrainer.services.significance: the paired bootstrap that decides promotions, and the constant
prediction a first model must beat. Known cases, each shipped family, a family without `resampled`,
and the time 1,000 resamples take."""

from __future__ import annotations

import json
import math
import time
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from retrainer.models.base import Metrics, MetricSpec, Prediction, Task
from retrainer.models.classifier import ClassifierFamily
from retrainer.models.ctr import CTRFamily, regression_metrics
from retrainer.models.regressor import RegressorFamily
from retrainer.models.testing import synthetic_data
from retrainer.models.timing import TimingFamily
from retrainer.services import significance
from retrainer.services.significance import PairedTest, improvement_pct, naive_baseline, paired_bootstrap


class PlainCTR:
    """A third-party family without `resampled`: the ctr metrics through `evaluate` alone."""

    task: ClassVar[Task] = Task.REGRESSION
    metric_spec: ClassVar[MetricSpec] = CTRFamily.metric_spec

    def evaluate(self, y: Any, prediction: Prediction) -> Metrics:
        return Metrics.of(regression_metrics(y, prediction.value), self.metric_spec)


def ctr_case(n: int, worse_by: float = 0.0, seed: int = 0) -> tuple[np.ndarray, Prediction, Prediction]:
    """A holdout and two predictions with independent errors; the reference's spread is `1 + worse_by` times
    the candidate's, so its expected MAE is too."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.01, 0.08, n)
    return (y, Prediction(y + rng.normal(0, 0.01, n)), Prediction(y + rng.normal(0, 0.01 * (1 + worse_by), n)))


def binary_case(n: int, seed: int = 0, edge: float = 1.0) -> tuple[np.ndarray, Prediction, Prediction]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)

    def scored(signal: float) -> Prediction:
        p1 = 1 / (1 + np.exp(-(signal * (y - 0.3) + rng.normal(0, 1, n))))
        return Prediction((p1 > 0.5).astype(int), np.c_[1 - p1, p1], (0, 1))

    return y, scored(1.0 + edge), scored(1.0)


def test_an_identical_candidate_improves_nothing() -> None:
    y, p, _ = ctr_case(500)
    t = paired_bootstrap(CTRFamily(), y, p, p, "mae")
    assert (t.point_pct, t.lower_pct, t.upper_pct) == (0.0, 0.0, 0.0)
    assert t.p_value == 1.0 and t.dropped == 0 and t.rows == 500 and t.resamples == 1000


def test_an_equally_good_candidate_gets_an_interval_around_zero() -> None:
    for seed in range(5):
        y, cand, ref = ctr_case(500, seed=seed)
        t = paired_bootstrap(CTRFamily(), y, cand, ref, "mae")
        assert t.lower_pct < 0 < t.upper_pct, t
        assert t.lower_pct < t.point_pct < t.upper_pct


def test_a_clearly_better_candidate_has_a_lower_bound_above_zero() -> None:
    y, cand, ref = ctr_case(2000, worse_by=0.3)
    t = paired_bootstrap(CTRFamily(), y, cand, ref, "mae")
    assert t.point_pct == pytest.approx(CTRFamily().evaluate(y, cand).improvement_pct(CTRFamily().evaluate(y, ref)))
    assert 15 < t.point_pct < 30 and t.lower_pct > 10 and t.p_value == 1 / 1001
    worse = paired_bootstrap(CTRFamily(), y, ref, cand, "mae")  # the mirror: clearly worse
    assert worse.upper_pct < 0 and worse.p_value == 1.0
    # higher is better: R² and the share within ±20 % move the same way
    assert paired_bootstrap(CTRFamily(), y, cand, ref, "r2").lower_pct > 0


def test_the_same_seed_gives_the_same_test_and_the_chunking_does_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    y, cand, ref = ctr_case(300, worse_by=0.05)
    a = paired_bootstrap(CTRFamily(), y, cand, ref, "mae", seed=3)
    assert paired_bootstrap(CTRFamily(), y, cand, ref, "mae", seed=3) == a
    assert paired_bootstrap(CTRFamily(), y, cand, ref, "mae", seed=4).lower_pct != a.lower_pct
    monkeypatch.setattr(significance, "CHUNK_BYTES", 8 * 300 * 7)  # 7 resamples a chunk: the same draws
    b = paired_bootstrap(CTRFamily(), y, cand, ref, "mae", seed=3)
    assert b.lower_pct == pytest.approx(a.lower_pct, rel=1e-12) and b.p_value == a.p_value


def test_a_family_without_resampled_is_scored_by_evaluate_with_the_same_resamples() -> None:
    y, cand, ref = ctr_case(200, worse_by=0.1)
    for metric in CTRFamily.metric_spec.names:
        fast = paired_bootstrap(CTRFamily(), y, cand, ref, metric, resamples=200)
        slow = paired_bootstrap(PlainCTR(), pd.Series(y), cand, ref, metric, resamples=200)
        for field in ("point_pct", "lower_pct", "upper_pct", "p_value"):
            assert getattr(slow, field) == pytest.approx(getattr(fast, field), rel=1e-9, abs=1e-12), (metric, field)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_classifiers(task: str) -> None:
    family = ClassifierFamily(task=task)
    data = synthetic_data(ClassifierFamily, n=1500, task=Task(task))
    train, test = slice(0, 1000), slice(1000, 1500)
    good = ClassifierFamily(task=task, n_estimators=40, max_depth=3).fit(data.X.iloc[train], data.y.iloc[train])
    stump = ClassifierFamily(task=task, n_estimators=2, max_depth=1).fit(data.X.iloc[train], data.y.iloc[train])
    X, y = data.X.iloc[test], data.y.iloc[test]
    for metric in ("roc_auc", "log_loss", "accuracy", "f1"):
        t = paired_bootstrap(family, y, good.predict(X), stump.predict(X), metric)
        assert t.lower_pct > 0 and t.dropped == 0, (metric, t)
    same = paired_bootstrap(family, y, good.predict(X), good.predict(X), "roc_auc")
    assert same.lower_pct == same.upper_pct == 0.0


def test_regressor_and_timing() -> None:
    y, cand, ref = ctr_case(800, worse_by=0.25)
    for metric in ("mae", "mse", "r2"):
        t = paired_bootstrap(RegressorFamily(), y, cand, ref, metric, resamples=300)
        assert t.lower_pct > 0, (metric, t)
    rng = np.random.default_rng(0)
    hours = rng.uniform(0, 48, 800)  # errors of 8 h against 12 h: every timing metric sees the difference
    c, r = Prediction(np.abs(hours + rng.normal(0, 8, 800))), Prediction(np.abs(hours + rng.normal(0, 12, 800)))
    for metric in TimingFamily.metric_spec.names:
        t = paired_bootstrap(TimingFamily(), hours, c, r, metric, resamples=300)
        assert t.lower_pct > 0, (metric, t)


def test_a_fitted_timing_model_against_a_constant() -> None:
    n = 240  # ten days of a daily rhythm, every hour: Prophet fits it in about a second
    time_ = pd.Series(pd.date_range("2024-03-01", periods=n, freq="h", tz="UTC"))
    rng = np.random.default_rng(0)
    hours = pd.Series(np.clip(10 + 8 * np.cos(2 * np.pi * time_.dt.hour.to_numpy() / 24) + rng.normal(0, 1, n), 0, None))
    X = pd.DataFrame(index=range(n))
    model = TimingFamily(uncertainty_samples=20).fit(X.iloc[:192], hours.iloc[:192], time=time_.iloc[:192])
    predicted = model.predict(X.iloc[192:], time=time_.iloc[192:])
    baseline = naive_baseline(model, hours.iloc[:192], 48)
    assert baseline.lower is not None and np.all(baseline.value == np.median(hours.iloc[:192]))
    t = paired_bootstrap(model, hours.iloc[192:], predicted, baseline, "overall_score")
    assert t.lower_pct > 20, t


def test_undefined_resamples_are_dropped_counted_and_make_the_test_inconclusive() -> None:
    # 40 rows with 2 positives: about 13 % of resamples draw no positive, and ROC AUC is undefined there
    y, cand, ref = binary_case(40, seed=1)
    y[:] = 0.0
    y[[3, 17]] = 1.0
    t = paired_bootstrap(ClassifierFamily(), y, cand, ref, "roc_auc")
    assert t.dropped > 100 and not t.conclusive  # (38/40)^40 = 13 % draw no positive; some give the reference 0
    assert math.isnan(t.lower_pct) and math.isnan(t.upper_pct) and math.isfinite(t.point_pct)
    record = t.to_json()
    assert record["lower_pct"] is None and record["upper_pct"] is None and record["dropped"] == t.dropped
    json.dumps(record, allow_nan=False)  # what JSONB accepts
    back = PairedTest.from_json(record)
    assert back.dropped == t.dropped and math.isnan(back.lower_pct) and back.point_pct == t.point_pct
    # a few dropped resamples: the bounds assume the worst for them, and the p-value counts them as not better
    y2, c2, r2 = binary_case(300, seed=2, edge=0.5)
    few = paired_bootstrap(ClassifierFamily(), y2, c2, r2, "roc_auc")
    assert few.dropped == 0 and few.conclusive


def test_bounds_with_dropped_resamples_are_the_worst_case_percentiles() -> None:
    ordered = np.arange(100.0)
    assert significance._at(ordered, 0.025 * 999 - 0) == pytest.approx(np.quantile(np.arange(1000.0), 0.025))
    assert significance._at(ordered, 99) == 99 and math.isnan(significance._at(ordered, 99.5))
    assert math.isnan(significance._at(ordered, -0.1))


def test_improvement_matches_metrics_improvement_pct_zero_reference_included() -> None:
    cases = [(0.9, 1.0), (1.1, 1.0), (0.0, 0.0), (0.1, 0.0), (-0.1, 0.0), (0.5, -0.5), (math.nan, 0.0)]
    for higher in (False, True):
        got = improvement_pct(np.array([c[0] for c in cases]), np.array([c[1] for c in cases]), higher)
        for (new, old), value in zip(cases, got, strict=True):
            want = (Metrics({"m": new}, "m", higher).improvement_pct(Metrics({"m": old}, "m", higher))
                    if not math.isnan(new) else math.nan)
            assert value == pytest.approx(want, nan_ok=True), (new, old, higher)


def test_naive_baseline_is_the_median_or_the_majority_class() -> None:
    assert naive_baseline(CTRFamily(), pd.Series([0.1, 0.4, 0.2, 9.0]), 3).value.tolist() == pytest.approx([0.3] * 3)
    labels = pd.Series([1.0, 0.0, 1.0, 1.0])  # as observations.label stores them: floats
    b = naive_baseline(ClassifierFamily(), labels, 2)
    assert b.classes == (0, 1) and b.value.tolist() == [1, 1]
    np.testing.assert_allclose(b.proba, [[0.25, 0.75], [0.25, 0.75]])
    m = naive_baseline(ClassifierFamily(task="multiclass"), [2, 0, 2, 5, 0], 1)
    assert m.classes == (0, 2, 5) and m.value.tolist() == [0]  # a tie: the smallest class
    assert math.isnan(ClassifierFamily().evaluate([0, 1], naive_baseline(ClassifierFamily(), labels, 2))
                      .values["roc_auc"]) is False  # a constant scores 0.5, a rank of ties
    with pytest.raises(ValueError, match="no training labels"):
        naive_baseline(CTRFamily(), [], 3)


def test_a_fitted_model_beats_the_constant_and_shuffled_labels_do_not() -> None:
    data = synthetic_data(CTRFamily, n=1200)
    model = CTRFamily(n_estimators=40, max_depth=3).fit(data.X.iloc[:900], data.y.iloc[:900])
    X, y = data.X.iloc[900:], data.y.iloc[900:]
    constant = naive_baseline(model, data.y.iloc[:900], len(y))
    assert paired_bootstrap(model, y, model.predict(X), constant, "mae").lower_pct > 50
    shuffled = CTRFamily(n_estimators=40, max_depth=3).fit(
        data.X.iloc[:900], data.y.iloc[:900].sample(frac=1, random_state=0).to_numpy())
    assert paired_bootstrap(model, y, shuffled.predict(X), constant, "mae").lower_pct < 0


def test_refuses_what_it_cannot_test() -> None:
    y, cand, ref = ctr_case(10)
    with pytest.raises(ValueError, match="unknown metric 'auc'; the family reports mae, rmse, r2, accuracy"):
        paired_bootstrap(CTRFamily(), y, cand, ref, "auc")
    with pytest.raises(ValueError, match="9 candidate and 10 reference predictions for 10 holdout rows"):
        paired_bootstrap(CTRFamily(), y, cand.take(9), ref, "mae")
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(CTRFamily(), y, cand, ref, "mae", confidence=1.0)


@pytest.mark.parametrize("rows", [2_000, 20_000])
def test_time_of_1000_resamples(rows: int, capsys: pytest.CaptureFixture[str]) -> None:
    timings = {}
    for name, family, (y, cand, ref), metric in (("ctr", CTRFamily(), ctr_case(rows), "mae"),
                                                 ("classifier", ClassifierFamily(), binary_case(rows), "roc_auc")):
        paired_bootstrap(family, y[:50], cand.take(50), ref.take(50), metric)  # imports (sklearn) out of the timing
        t0 = time.perf_counter()
        paired_bootstrap(family, y, cand, ref, metric)
        timings[name] = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n1000 paired resamples of {rows:,} rows: " + ", ".join(f"{k} {v:.3f} s" for k, v in timings.items()))
    if rows == 2_000:
        assert max(timings.values()) < 2.0  # ~0.05 s on a quiet machine; generous on a shared one
