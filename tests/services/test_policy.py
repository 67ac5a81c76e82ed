"""retrainer.services.policy: promote only a candidate that is really better on the same holdout."""

from __future__ import annotations

import pytest

from retrainer.config import Promotion
from retrainer.models.base import Metrics
from retrainer.services.policy import decide


def mae(value: float) -> Metrics:
    return Metrics({"mae": value, "rmse": value * 1.3}, primary="mae", higher_is_better=False)


def auc(value: float) -> Metrics:
    return Metrics({"auc": value}, primary="auc", higher_is_better=True)


DEFAULT = Promotion()


def test_first_model_is_promoted() -> None:
    d = decide(mae(0.05), None, DEFAULT, champion_id=None)
    assert d.promote is True
    assert d.improvement_pct is None
    assert "First model" in d.reason


def test_clear_improvement_is_promoted() -> None:
    d = decide(mae(0.010), mae(0.020), DEFAULT, "ctr-v1")
    assert d.promote is True
    assert d.improvement_pct == pytest.approx(50.0)
    assert "50.0% better" in d.reason and "ctr-v1" in d.reason
    assert "0.0200 -> 0.0100" in d.reason


def test_exactly_the_threshold_is_promoted() -> None:
    d = decide(mae(0.0196), mae(0.0200), DEFAULT, "ctr-v1")
    assert d.improvement_pct == pytest.approx(2.0)
    assert d.promote is True


def test_small_improvement_is_kept_naming_the_requirement() -> None:
    d = decide(mae(0.0199), mae(0.0200), DEFAULT, "ctr-v1")
    assert d.promote is False
    assert d.improvement_pct == pytest.approx(0.5)
    assert "not enough better" in d.reason
    assert "needs >= 2%" in d.reason
    assert "ctr-v1" in d.reason


def test_worse_candidate_is_kept() -> None:
    d = decide(mae(0.03), mae(0.02), DEFAULT, "ctr-v4")
    assert d.promote is False
    assert d.improvement_pct == pytest.approx(-50.0)
    assert "worse" in d.reason and "-50.0%" in d.reason


def test_threshold_is_configurable() -> None:
    strict = Promotion(min_improvement_pct=10)
    assert decide(mae(0.019), mae(0.020), strict, "v1").promote is False  # 5 %
    assert "needs >= 10%" in decide(mae(0.019), mae(0.020), strict, "v1").reason
    assert decide(mae(0.017), mae(0.020), strict, "v1").promote is True  # 15 %
    lax = Promotion(min_improvement_pct=0)
    assert decide(mae(0.020), mae(0.020), lax, "v1").promote is True  # a tie passes a 0 % bar


def test_higher_is_better_metrics() -> None:
    assert decide(auc(0.90), auc(0.80), DEFAULT, "v1").promote is True
    d = decide(auc(0.79), auc(0.80), DEFAULT, "v1")
    assert d.promote is False and d.improvement_pct < 0


def test_auto_promote_off_keeps_even_a_better_candidate() -> None:
    off = Promotion(auto_promote=False)
    d = decide(mae(0.01), mae(0.02), off, "ctr-v1")
    assert d.promote is False
    assert d.improvement_pct == pytest.approx(50.0)
    assert "Auto-promotion is off" in d.reason


def test_an_unusable_champion_is_kept_with_an_alert_unless_the_candidate_clears_a_floor() -> None:
    problem = "artifact /x/ctr-v1.json: checksum mismatch"
    d = decide(mae(0.05), None, DEFAULT, "ctr-v1", champion_problem=problem)
    assert d.promote is False and d.alert is True
    assert "cannot be scored" in d.reason and problem in d.reason and "retrainer promote" in d.reason
    floored = Promotion(floor={"max_mae": 0.06})
    d = decide(mae(0.05), None, floored, "ctr-v1", champion_problem=problem)
    assert d.promote is True and d.alert is False and "clears the quality floor (clears max_mae 0.06)" in d.reason
    assert decide(mae(0.07), None, floored, "ctr-v1", champion_problem=problem).promote is False
    off = Promotion(auto_promote=False, floor={"max_mae": 0.06})
    assert decide(mae(0.05), None, off, "ctr-v1", champion_problem=problem).promote is False


def test_a_champion_whose_primary_metric_is_not_finite_counts_as_unusable() -> None:
    d = decide(mae(0.05), mae(float("inf")), DEFAULT, "ctr-v1")
    assert d.promote is False and d.alert is True and "mae on this holdout is inf" in d.reason


def test_the_floor_applies_to_every_candidate_the_first_too() -> None:
    floor = Promotion(floor={"max_mae": 0.02, "min_auc": 0.5})
    d = decide(mae(0.03), None, floor, None)
    assert d.promote is False and "misses the quality floor (mae 0.03 > 0.02, auc nan < 0.5)" in d.reason
    assert decide(mae(0.01), mae(0.05), Promotion(floor={"max_mae": 0.02}), "v1").promote is True
    assert decide(mae(0.03), mae(0.05), Promotion(floor={"max_mae": 0.02}), "v1").promote is False


def test_auto_promote_off_holds_for_the_first_model() -> None:
    d = decide(mae(0.01), None, Promotion(auto_promote=False), None)
    assert d.promote is False and "First model" in d.reason and "by hand" in d.reason


def test_floor_keys_name_a_bound() -> None:
    with pytest.raises(ValueError, match="max_<metric> or min_<metric>"):
        Promotion(floor={"mae": 0.02})
