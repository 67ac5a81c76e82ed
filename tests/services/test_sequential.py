"""retrainer.services.sequential: the always-valid probation test. Its false rollback rate stays at or under
alpha when looked at after every outcome, it catches a large degradation within a few hundred outcomes,
and its verdict does not depend on how often it is called. (benchmarks/probation.py measures it at size.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retrainer.services import sequential
from retrainer.services.sequential import Sample, probation_test

ALPHA, TOL, MIN = 0.05, 5.0, 30


def binary(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return (rng.random(n) < rate).astype(float)


def lognormal(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    return rng.lognormal(0.0, 1.0, n) * scale


@pytest.mark.parametrize(("draw", "base"), [(binary, 0.2), (lognormal, 1.0)], ids=["0/1", "lognormal"])
def test_false_rollbacks_stay_under_alpha_at_the_edge_of_the_null_however_often_it_looks(draw, base) -> None:
    # The new version is exactly `tolerance` worse: the hardest case H0 allows. Each probation is looked
    # at after every one of its 2,000 outcomes (one call judges every prefix).
    rng = np.random.default_rng(20240601)
    reps = 300
    rollbacks = sum(
        probation_test(draw(rng, 2000, base * (1 + TOL / 100)), draw(rng, 2000, base), TOL, ALPHA, MIN).status == "worse"
        for _ in range(reps))
    assert rollbacks / reps <= ALPHA


def test_a_daily_fixed_z_test_on_the_same_data_would_alarm_far_more_often() -> None:
    # The reason for the sequential test: 30 daily looks at a fixed-sample z-test, same null edge.
    rng = np.random.default_rng(7)
    reps, z_alarms, seq_alarms = 300, 0, 0
    for _ in range(reps):
        prev, new = binary(rng, 5000, 0.2), binary(rng, 3000, 0.2 * 1.05)
        n = np.arange(100, 3001, 100)
        mean = np.cumsum(new)[n - 1] / n
        z = (mean - 1.05 * prev.mean()) / np.sqrt(mean * (1 - mean) / n + 1.05**2 * prev.var(ddof=1) / prev.size)
        z_alarms += bool(np.any(z > 1.6449))
        seq_alarms += probation_test(new, prev, TOL, ALPHA, MIN).status == "worse"
    assert z_alarms / reps > 2 * ALPHA  # ~20 %
    assert seq_alarms / reps <= ALPHA


def test_a_version_half_again_as_bad_is_caught_within_a_few_hundred_outcomes() -> None:
    rng = np.random.default_rng(3)
    prev = binary(rng, 5000, 0.2)
    verdict = probation_test(binary(rng, 1000, 0.3), prev, TOL, ALPHA, MIN)
    assert verdict.status == "worse"
    assert MIN <= verdict.crossed_at <= 500
    assert verdict.statistic >= verdict.threshold == pytest.approx(math.log(20))
    assert verdict.p_value <= ALPHA
    assert verdict.mean_new > verdict.mean_prev
    assert "worse beyond the 5 % tolerance" in verdict.reason and f"outcome {verdict.crossed_at}" in verdict.reason
    heavy = probation_test(lognormal(rng, 2000, 2.0), lognormal(rng, 5000, 1.0), TOL, ALPHA, MIN)
    assert heavy.status == "worse" and heavy.crossed_at <= 500


def test_the_verdict_is_the_same_whether_looked_at_after_every_outcome_or_once() -> None:
    rng = np.random.default_rng(11)
    prev, new = binary(rng, 3000, 0.2), binary(rng, 800, 0.3)
    once = probation_test(new, prev, TOL, ALPHA, MIN)
    assert once.status == "worse"
    first = next(k for k in range(1, new.size + 1) if probation_test(new[:k], prev, TOL, ALPHA, MIN).status == "worse")
    assert first == once.crossed_at
    # and once crossed it stays crossed: a later call on more data never undoes a rollback verdict
    assert all(probation_test(new[:k], prev, TOL, ALPHA, MIN).status == "worse" for k in range(first, new.size + 1, 37))


def test_no_verdict_before_min_outcomes_however_bad() -> None:
    verdict = probation_test([1.0] * 29, [0.0, 1.0] * 500, TOL, ALPHA, MIN)
    assert verdict.status == "continue" and verdict.statistic == 0.0
    assert verdict.reason == "29 of the 30 outcomes a verdict needs"
    assert probation_test([1.0] * 30, [0.0, 1.0] * 500, TOL, ALPHA, MIN).status == "worse"


def test_a_small_baseline_cannot_prove_a_small_degradation() -> None:
    # The previous mean is uncertain: its error is shared by every new outcome, so the evidence saturates
    # instead of growing without end; a large record behaves as a known mean.
    rng = np.random.default_rng(5)
    new = lognormal(rng, 5000, 1.15)
    small = Sample(50, float(np.exp(0.5)), float((np.e - 1) * np.e))
    large = Sample(500_000, small.mean, small.var)
    assert probation_test(new, small, TOL, ALPHA, MIN).status == "continue"
    assert probation_test(new, large, TOL, ALPHA, MIN).status == "worse"
    path = sequential.evidence(new, small, TOL, ALPHA)
    assert path.max() < math.log(1 / ALPHA)


def test_a_better_or_equal_version_gathers_no_evidence() -> None:
    rng = np.random.default_rng(9)
    prev = binary(rng, 5000, 0.2)
    better = probation_test(binary(rng, 5000, 0.15), prev, TOL, ALPHA, MIN)
    assert better.status == "continue" and better.p_value > 0.5
    assert "not shown worse" in better.reason


def test_more_tolerance_means_less_evidence() -> None:
    rng = np.random.default_rng(2)
    prev, new = binary(rng, 5000, 0.2), binary(rng, 1000, 0.25)
    stats = [probation_test(new, prev, tol, ALPHA, MIN).statistic for tol in (0, 5, 20)]
    assert stats[0] > stats[1] > stats[2]


def test_sample_from_sums_equals_sample_of_values_and_guards_a_perfect_record() -> None:
    y = np.array([0.5, 1.5, 2.0, 0.25, 3.0])
    assert Sample.of(y) == Sample.from_sums(5, float(y.sum()), float((y * y).sum()))
    assert Sample.of(y).var == pytest.approx(float(y.var(ddof=1)))
    perfect = Sample.of(np.zeros(200))  # 0/1 losses without a single error: Agresti-Coull, not certainty
    assert perfect.mean == 0.0 and perfect.var == pytest.approx((2 / 204) * (1 - 2 / 204))
    # a perfect previous record does not turn one error of the new version into a rollback
    assert probation_test([0.0] * 99 + [1.0], perfect, TOL, ALPHA, MIN).status == "continue"
    assert probation_test([0.0, 1.0] * 50, perfect, TOL, ALPHA, MIN).status == "worse"


def test_no_previous_record_is_no_verdict() -> None:
    verdict = probation_test([1.0] * 100, [0.5], TOL, ALPHA, MIN)
    assert verdict.status == "continue" and verdict.n_prev == 1
    assert "nothing to compare" in verdict.reason


@pytest.mark.parametrize(("new", "message"), [
    ([0.1, float("nan")], "new losses: 1 value(s) are not finite numbers"),
    ([0.1, -0.2], "new losses: a loss is never negative, got -0.2"),
])
def test_bad_losses_are_refused_with_one_clear_line(new: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        probation_test(new, [0.1, 0.2, 0.3], TOL, ALPHA, MIN)


@pytest.mark.parametrize(("kwargs", "message"), [({"alpha": 0.0}, "alpha must lie in"),
                                                 ({"tolerance_pct": -1.0}, "tolerance_pct is a percentage")])
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    args = {"tolerance_pct": TOL, "alpha": ALPHA} | kwargs
    with pytest.raises(ValueError, match=message):
        probation_test([0.1] * 40, [0.1, 0.2] * 40, min_outcomes=MIN, **args)


def test_verdict_is_plain_json() -> None:
    verdict = probation_test([0.2] * 40, [0.1, 0.3] * 40, TOL, ALPHA, MIN).as_dict()
    assert json.loads(json.dumps(verdict)) == verdict
    assert set(verdict) >= {"status", "statistic", "threshold", "n_new", "n_prev", "mean_new", "mean_prev", "reason"}


def test_horizon_is_the_geometric_middle_of_the_probation() -> None:
    assert sequential.horizon_for(30, 5000) == pytest.approx(387.3, abs=0.1)
    assert sequential.mixture_scale(0.05, 400) == pytest.approx(math.sqrt((2 * math.log(20) + math.log(2 * math.log(20) + 1)) / 400))
