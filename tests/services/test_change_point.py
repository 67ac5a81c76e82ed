"""retrainer.services.change_point: the CUSUM test's false alarm rate on stationary losses (A/A), where
it places a real shift, and what it refuses to judge."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from retrainer.services import change_point


@pytest.mark.parametrize("n", [100, 1000, 5000])
@pytest.mark.parametrize("losses", ["errors", "absolute"])
def test_false_alarms_on_stationary_losses_stay_near_the_level(n: int, losses: str) -> None:
    """800 stationary series: 0/1 errors at 15 % (a classifier) or |N(0,1)| (a regressor's absolute errors).
    The asymptotic Kolmogorov bound is conservative at small n; the rate must not exceed 5 % beyond noise."""
    rng = np.random.default_rng(n + len(losses))
    draw = (lambda: (rng.random(n) < 0.15).astype(float)) if losses == "errors" else (lambda: np.abs(rng.standard_normal(n)))
    alarms = sum(change_point.mean_shift(draw()) is not None for _ in range(800))
    assert binomtest(alarms, 800, change_point.ALPHA, alternative="greater").pvalue > 0.01, alarms / 800
    assert alarms / 800 > 0.01  # a test that never fires is not a test


def test_a_real_shift_is_found_and_placed() -> None:
    rng = np.random.default_rng(1)
    placed = []
    for _ in range(100):  # 4,000 outcomes at 14 % errors, then 300 at 30 %: the check's view after a change
        losses = np.r_[rng.random(4000) < 0.14, rng.random(300) < 0.30].astype(float)
        shift = change_point.mean_shift(losses)
        assert shift is not None and shift.worse and shift.p_value < 0.05
        placed.append(shift.index)
    assert abs(np.median(placed) - 4000) <= 25
    assert np.mean(np.abs(np.array(placed) - 4000) <= 100) >= 0.8


def test_an_improvement_is_a_shift_but_not_worse() -> None:
    losses = np.r_[np.full(200, 1.0), np.zeros(200)] + np.random.default_rng(2).normal(0, 0.1, 400)
    shift = change_point.mean_shift(losses)
    assert shift is not None and not shift.worse and shift.index == 200


@pytest.mark.parametrize("losses", [np.ones(500), np.arange(40.0), np.r_[np.zeros(300), [np.nan], np.ones(300)]],
                         ids=["constant", "too few", "not finite"])
def test_what_it_does_not_judge(losses: np.ndarray) -> None:
    assert change_point.mean_shift(losses) is None
