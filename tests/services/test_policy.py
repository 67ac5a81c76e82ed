"""services.policy: promote only a candidate that is really better on the same holdout."""

from __future__ import annotations

import pytest

from models.base import Metrics
from retrainer.config import Promotion
from services.policy import decide


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


def test_unusable_champion_is_replaced_unless_auto_promote_is_off() -> None:
    problem = "artifact /x/ctr-v1.json: checksum mismatch"
    d = decide(mae(0.05), None, DEFAULT, "ctr-v1", champion_problem=problem)
    assert d.promote is True
    assert "unusable" in d.reason and problem in d.reason and "ctr-v1" in d.reason
    d = decide(mae(0.05), None, Promotion(auto_promote=False), "ctr-v1", champion_problem=problem)
    assert d.promote is False
    assert "unusable" in d.reason
