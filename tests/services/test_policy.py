"""retrainer.services.policy: promote only a candidate that is really better on the same holdout, each
rule recorded with its threshold, value and verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retrainer.config import Promotion
from retrainer.models.base import Metrics
from retrainer.services.policy import Decision, Evidence, Guard, decide
from retrainer.services.significance import PairedTest

NOW = datetime(2024, 6, 1, tzinfo=UTC)
DEFAULT = Promotion()
ROWS = 2000  # holdout rows: above min_holdout_rows


def mae(value: float) -> Metrics:
    return Metrics({"mae": value, "rmse": value * 1.3}, primary="mae", higher_is_better=False)


def auc(value: float) -> Metrics:
    return Metrics({"auc": value}, primary="auc", higher_is_better=True)


def paired(point: float, lower: float, upper: float | None = None, metric: str = "mae") -> PairedTest:
    return PairedTest(method="paired_bootstrap", metric=metric, point_pct=point, lower_pct=lower,
                      upper_pct=point + (point - lower) if upper is None else upper, confidence=0.95, resamples=1000,
                      rows=ROWS, p_value=0.01 if lower > 0 else 0.4)


def against(cand: Metrics, champ: Metrics, test: PairedTest | None = None, policy: Promotion = DEFAULT,
            rows: int = ROWS, **more: object) -> Decision:
    if test is None:
        pct = cand.improvement_pct(champ)
        test = paired(pct, pct - 1.0)  # a clear interval around the point estimate
    return decide(Evidence(candidate=cand, champion=champ, champion_id="ctr-v1", holdout_rows=rows, test=test,
                           **more), policy)  # type: ignore[arg-type]


def rules(d: Decision) -> dict[str, dict]:
    return {r["rule"]: r for r in d.record()["rules"]}


def test_first_model_must_beat_a_constant_beyond_noise() -> None:
    d = decide(Evidence(candidate=mae(0.05), holdout_rows=40, baseline_test=paired(30.0, 12.0)), DEFAULT)
    assert d.promote is True and d.improvement_pct is None
    assert "First model" in d.reason and "beats a constant prediction" in d.reason
    assert rules(d)["baseline"]["passed"] is True and rules(d)["baseline"]["value"] == 12.0
    # shuffled labels: no better than the training median -> not promoted, and not an alert
    d = decide(Evidence(candidate=mae(0.05), holdout_rows=40, baseline_test=paired(-17.0, -30.0)), DEFAULT)
    assert d.promote is False and d.alert is False and "does not beat a constant prediction" in d.reason
    # a point estimate above the constant's is not enough when the interval reaches below zero
    assert decide(Evidence(candidate=mae(0.05), holdout_rows=40, baseline_test=paired(3.0, -2.0)), DEFAULT).promote is False
    assert decide(Evidence(candidate=mae(0.05), holdout_rows=40, baseline_test=paired(3.0, -2.0)),
                  Promotion(baseline=False)).promote is True


def test_clear_significant_improvement_is_promoted_with_its_interval() -> None:
    d = against(mae(0.010), mae(0.020), paired(50.0, 41.0, 58.0))
    assert d.promote is True and d.improvement_pct == pytest.approx(50.0)
    assert "50.0% better than ctr-v1" in d.reason and "0.0200 -> 0.0100" in d.reason
    assert "95% interval [+41.0%, +58.0%]" in d.reason
    record = d.record()
    assert record["promote"] is True and record["summary"] == d.reason
    assert [r["rule"] for r in record["rules"]] == ["evidence", "improvement", "significance", "auto_promote"]
    assert all(r["passed"] in (True, None) for r in record["rules"])


def test_a_point_estimate_above_2_percent_within_noise_is_kept() -> None:
    d = against(mae(0.0190), mae(0.0200), paired(5.0, -1.5, 11.0))
    assert d.promote is False
    assert "not better beyond noise" in d.reason and "[-1.5%, +11.0%]" in d.reason
    assert rules(d)["significance"] == {"rule": "significance", "threshold": 0.0, "value": -1.5, "passed": False,
                                        "note": "95% interval [-1.5%, +11.0%]"}
    assert rules(d)["improvement"]["passed"] is True


def test_small_or_negative_improvement_is_kept_naming_the_requirement() -> None:
    d = against(mae(0.0199), mae(0.0200), paired(0.5, 0.1))
    assert d.promote is False and d.improvement_pct == pytest.approx(0.5)
    assert "not enough better" in d.reason and "needs >= 2%" in d.reason and "ctr-v1" in d.reason
    d = against(mae(0.03), mae(0.02), paired(-50.0, -60.0))
    assert d.promote is False and "worse" in d.reason and "-50.0%" in d.reason
    assert "(and 1 more rule(s) failed)" in d.reason


def test_too_small_a_holdout_keeps_the_champion() -> None:
    d = against(mae(0.010), mae(0.020), paired(50.0, 30.0), rows=40)
    assert d.promote is False
    assert "the holdout has 40 rows; automatic promotion needs >= 200" in d.reason
    assert rules(d)["evidence"] == {"rule": "evidence", "threshold": 200, "value": 40, "passed": False, "note": ""}
    assert against(mae(0.010), mae(0.020), paired(50.0, 30.0), rows=40, policy=Promotion(min_holdout_rows=20)).promote


def test_significance_none_is_the_plain_point_estimate_rule() -> None:
    plain = Promotion(significance={"test": "none"})
    assert against(mae(0.0196), mae(0.0200), paired(2.0, -5.0), policy=plain).promote is True
    assert rules(against(mae(0.0196), mae(0.0200), None, policy=plain))["significance"]["passed"] is None
    strict = Promotion(significance={"min_lower_bound_pct": 5})  # seed 004's style: better by 5 % beyond noise
    assert against(mae(0.010), mae(0.020), paired(50.0, 4.0), policy=strict).promote is False
    assert against(mae(0.010), mae(0.020), paired(50.0, 6.0), policy=strict).promote is True


def test_an_inconclusive_test_keeps_the_champion() -> None:
    d = against(mae(0.010), mae(0.020), paired(50.0, float("nan")))
    assert d.promote is False and "inconclusive" in d.reason
    assert rules(d)["significance"]["value"] is None  # JSON-safe


def test_threshold_is_configurable_and_higher_is_better_metrics() -> None:
    strict = Promotion(min_improvement_pct=10)
    assert against(mae(0.019), mae(0.020), policy=strict).promote is False  # 5 %
    assert against(mae(0.017), mae(0.020), policy=strict).promote is True  # 15 %
    assert against(auc(0.90), auc(0.80), paired(12.5, 6.0, metric="auc")).promote is True
    d = against(auc(0.79), auc(0.80), paired(-1.25, -4.0, metric="auc"))
    assert d.promote is False and d.improvement_pct < 0


def test_a_guarded_metric_worse_beyond_tolerance_keeps_the_champion() -> None:
    ok = Guard("rmse", None, 0.021, 0.020, 5.0, 10.0, ROWS)
    bad = Guard("rmse", "hook_type=story", 0.030, 0.020, 50.0, 10.0, 300)
    policy = Promotion(guards={"rmse": 10})
    assert against(mae(0.010), mae(0.020), policy=policy, guards=(ok,)).promote is True
    d = against(mae(0.010), mae(0.020), policy=policy, guards=(ok, bad))
    assert d.promote is False
    assert "rmse in hook_type=story 0.02 -> 0.03 (+50.0% worse, tolerance 10%)" in d.reason
    assert rules(d)["guards"]["passed"] is False


def test_cooldown_after_the_last_change_of_production() -> None:
    recent = dict(last_change=NOW - timedelta(hours=2), now=NOW)
    d = against(mae(0.010), mae(0.020), **recent)
    assert d.promote is False and "production changed 2.0 h ago; no automatic promotion within 6 h" in d.reason
    assert against(mae(0.010), mae(0.020), last_change=NOW - timedelta(hours=7), now=NOW).promote is True
    assert against(mae(0.010), mae(0.020), policy=Promotion(cooldown_hours=0), **recent).promote is True


def test_auto_promote_off_keeps_even_a_better_candidate_and_the_first_model() -> None:
    off = Promotion(auto_promote=False)
    d = against(mae(0.01), mae(0.02), policy=off)
    assert d.promote is False and "Auto-promotion is off" in d.reason
    d = decide(Evidence(candidate=mae(0.01), holdout_rows=50, baseline_test=paired(40.0, 20.0)), off)
    assert d.promote is False and "First model" in d.reason and "by hand" in d.reason


def test_an_unusable_champion_is_replaced_only_by_a_candidate_that_beats_a_constant() -> None:
    problem = "artifact /x/ctr-v1.json: checksum mismatch"

    def unusable(policy: Promotion, baseline: PairedTest | None, cand: Metrics = mae(0.05)) -> Decision:
        return decide(Evidence(candidate=cand, holdout_rows=100, champion_id="ctr-v1", champion_problem=problem,
                               baseline_test=baseline), policy)

    d = unusable(DEFAULT, paired(20.0, 8.0))
    assert d.promote is True and "cannot be scored" in d.reason and problem in d.reason
    d = unusable(DEFAULT, paired(1.0, -4.0))
    assert d.promote is False and d.alert is True and "does not beat a constant" in d.reason
    nothing = Promotion(baseline=False)
    d = unusable(nothing, None)
    assert d.promote is False and d.alert is True and "retrainer promote" in d.reason
    floored = Promotion(baseline=False, floor={"max_mae": 0.06})
    assert unusable(floored, None).promote is True
    assert unusable(floored, None, mae(0.07)).promote is False


def test_a_champion_whose_primary_metric_is_not_finite_counts_as_unusable() -> None:
    d = decide(Evidence(candidate=mae(0.05), champion=mae(float("inf")), champion_id="ctr-v1", holdout_rows=ROWS,
                        baseline_test=paired(-3.0, -9.0)), DEFAULT)
    assert d.promote is False and d.alert is True and "mae on this holdout is inf" in d.reason


def test_the_floor_applies_to_every_candidate_the_first_too() -> None:
    floor = Promotion(floor={"max_mae": 0.02, "min_auc": 0.5})
    d = decide(Evidence(candidate=mae(0.03), holdout_rows=50, baseline_test=paired(40.0, 20.0)), floor)
    assert d.promote is False and "misses the quality floor (mae 0.03 > 0.02, auc nan < 0.5)" in d.reason
    assert against(mae(0.01), mae(0.05), policy=Promotion(floor={"max_mae": 0.02})).promote is True
    assert against(mae(0.03), mae(0.05), policy=Promotion(floor={"max_mae": 0.02})).promote is False


def test_config_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="max_<metric> or min_<metric>"):
        Promotion(floor={"mae": 0.02})
    with pytest.raises(ValueError, match="tolerance"):
        Promotion(guards={"rmse": -1})
