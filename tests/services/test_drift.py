"""Feature drift (services/drift.py, services/drift_check.py): the profile's statistics against scipy on
the raw reference, verdicts on data with and without a known shift (fixed seeds), categories and
booleans, unusable inputs; the check on SQLite and PostgreSQL (reports, system_events, cooldown, no
reference, empty window) and the profile each retrain records."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import ModelConfig, Settings
from retrainer.db import session_scope
from retrainer.db.records import DriftReport, FeatureProfile, PredictionRecord, SystemEvent, TrainingRun, Trigger
from retrainer.services import drift, drift_check, reports, retrain
from tests.services.builders import make_version, seed

TYPES = {"a": "numeric", "b": "numeric", "c": "numeric", "d": "numeric", "plan": "categorical", "trial": "boolean"}
PLANS = ["basic", "pro", "team"]


def inputs(n: int, seed: int, shift: dict[str, float] | None = None, plans: tuple[float, ...] = (0.5, 0.3, 0.2),
           trial: float = 0.3) -> pd.DataFrame:
    """`n` rows of the test features; `shift` moves a numeric feature's mean by that many of its standard deviations."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    frame = pd.DataFrame({
        "a": rng.normal(0, 1, n) + shift.get("a", 0),
        "b": rng.lognormal(0, 0.5, n) + shift.get("b", 0) * 0.6039,  # std of lognormal(0, 0.5)
        "c": rng.uniform(0, 10, n) + shift.get("c", 0) * 2.8868,
        "d": rng.integers(0, 24, n).astype(float) + shift.get("d", 0) * 6.9222,
        "plan": pd.Categorical(rng.choice(PLANS, n, p=list(plans)), categories=PLANS),
        "trial": rng.random(n) < trial,
    })
    return frame


REFERENCE = inputs(10_000, seed=1)
PROFILE = drift.build_profile(REFERENCE, TYPES)


# --- the statistics ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_from_the_sorted_sample_wasserstein_and_ks_equal_scipy_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 400)), int(rng.integers(1, 2000))
    cases = [(rng.normal(size=n), rng.normal(0.3, 1.2, m)),
             (rng.integers(0, 5, n).astype(float), rng.integers(0, 7, m).astype(float)),  # ties on both sides
             (rng.exponential(size=n), np.concatenate([rng.exponential(size=m), [0.0, 1e6]]))]
    for ref, cur in cases:
        profile = drift.numeric_profile(ref)
        assert profile["sketch_error"] == 0.0  # at most EXACT_POINTS distinct values: the sample itself
        w, d = drift._wasserstein_ks(np.sort(cur), *drift._sketch(profile))
        assert w == pytest.approx(st.wasserstein_distance(ref, cur), rel=1e-9, abs=1e-12)
        assert d == pytest.approx(st.ks_2samp(ref, cur).statistic, abs=1e-12)


@pytest.mark.parametrize(("name", "make"), [
    ("normal", lambda rng, n: rng.normal(size=n)),
    ("lognormal", lambda rng, n: rng.lognormal(0, 1.5, n)),
    ("integers", lambda rng, n: rng.integers(0, 5000, n).astype(float)),  # many ties, too many values to keep
])
def test_the_quantile_sketch_agrees_with_scipy_on_the_raw_reference(name: str, make: Any) -> None:
    rng = np.random.default_rng(11)
    ref = make(rng, 50_000)
    profile = drift.numeric_profile(ref)
    assert len(profile["q"]) < 1300 and profile["sketch_error"] < 2e-3, profile["sketch_error"]
    for shift in (0.0, 0.05, 0.2, 0.5):
        cur = make(rng, 5_000) + shift * ref.std()
        entry = drift._numeric(profile, cur, "wasserstein", 0.1, 1)
        exact = st.wasserstein_distance(ref, cur) / ref.std()
        # the triangle inequality: within the distance between the sketch and the rows it came from
        assert abs(entry["wasserstein"] - exact) <= profile["sketch_error"] + 1e-9
        assert entry["drifted"] == (exact >= 0.1)
        assert abs(entry["ks"] - st.ks_2samp(ref, cur).statistic) <= 1.5 / drift.QUANTILES


def test_numeric_psi_uses_the_reference_deciles() -> None:
    ref = np.arange(1000, dtype=float)
    profile = drift.numeric_profile(ref)
    assert profile["psi_shares"] == pytest.approx([0.1] * 10)
    cur = np.concatenate([np.full(500, 50.0), np.full(500, 950.0)])  # half in the first decile, half in the last
    entry = drift._numeric(profile, cur, "psi", 0.2, 1)
    expected = 2 * (0.5 - 0.1) * np.log(5) + 8 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    assert entry["statistic"] == pytest.approx(expected) and entry["drifted"]


# --- verdicts -----------------------------------------------------------------------------------------

def test_no_shift_stays_silent_and_a_known_shift_is_found() -> None:
    same = drift.compare(PROFILE, inputs(2_000, seed=2))
    assert same.drifted_features == [] and same.drifted_share == 0.0 and not same.drifted
    assert set(same.compared) == set(TYPES)

    shifted = drift.compare(PROFILE, inputs(2_000, seed=3, shift={"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5}))
    assert shifted.drifted_features == ["a", "b", "c", "d"]
    assert shifted.drifted_share == pytest.approx(4 / 6) and shifted.drifted
    for name in "abcd":
        f = shifted.features[name]
        assert f["method"] == "wasserstein" and f["threshold"] == 0.1
        assert f["statistic"] == pytest.approx(0.5, abs=0.06)  # a mean shift of 0.5 std: W / std = 0.5
        assert f["psi"] > 0.1  # reported beside the verdict's statistic

    two = drift.compare(PROFILE, inputs(2_000, seed=4, shift={"a": 0.5, "b": 0.5}))
    assert two.drifted_features == ["a", "b"] and not two.drifted  # 2 of 6 < share 0.5
    assert drift.compare(PROFILE, inputs(2_000, seed=4, shift={"a": 0.5, "b": 0.5}), share=0.3).drifted


@pytest.mark.parametrize("method", ["ks", "psi"])
def test_other_numeric_methods_and_configured_thresholds(method: str) -> None:
    calm = drift.compare(PROFILE, inputs(2_000, seed=5), numeric=method)
    moved = drift.compare(PROFILE, inputs(2_000, seed=6, shift={"a": 1.0}), numeric=method)
    assert not calm.drifted_features and moved.drifted_features == ["a"]
    assert moved.features["a"]["threshold"] == drift.DEFAULT_THRESHOLDS[method]
    strict = drift.compare(PROFILE, inputs(2_000, seed=6, shift={"a": 1.0}), numeric=method, numeric_threshold=5.0)
    assert strict.features["a"]["threshold"] == 5.0 and not strict.features["a"]["drifted"]
    if method == "ks":
        assert moved.features["a"]["p_value"] < 1e-6


def test_categories_psi_and_chi2() -> None:
    assert PROFILE["features"]["plan"]["counts"].keys() == set(PLANS)
    same = drift.compare(PROFILE, inputs(2_000, seed=7))
    assert not same.features["plan"]["drifted"] and not same.features["trial"]["drifted"]

    moved = inputs(2_000, seed=8, plans=(0.25, 0.4, 0.35), trial=0.6)
    psi = drift.compare(PROFILE, moved)
    p_ref = np.array([PROFILE["features"]["plan"]["counts"][p] for p in PLANS]) / 10_000
    p_cur = moved["plan"].value_counts(normalize=True).reindex(PLANS).to_numpy()
    assert psi.features["plan"]["statistic"] == pytest.approx(float(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref))))
    assert psi.features["plan"]["drifted"] and psi.features["trial"]["drifted"]

    chi2 = drift.compare(PROFILE, moved, categorical="chi2")
    w = float(np.sqrt(np.sum((p_cur - p_ref) ** 2 / p_ref)))
    assert chi2.features["plan"]["statistic"] == pytest.approx(w) and chi2.features["plan"]["drifted"]
    assert chi2.features["plan"]["p_value"] < 1e-10


def test_a_category_never_seen_in_training_is_named() -> None:
    current = inputs(1_000, seed=9)
    current["plan"] = current["plan"].astype(object)
    current.loc[:99, "plan"] = "enterprise"
    entry = drift.compare(PROFILE, current).features["plan"]
    assert "not seen in training: 'enterprise' (10.0% of recent inputs)" in entry["note"]
    assert entry["drifted"]  # 10 % in a bucket the reference had at the floor share


def test_many_categories_keep_the_most_frequent_and_an_other_bucket() -> None:
    labels = pd.Series([f"c{i % 50}" for i in range(5_000)] + ["c0"] * 1_000)
    profile = drift.categorical_profile(labels)
    assert len(profile["counts"]) == drift.MAX_CATEGORIES - 1 and profile["other"] > 0
    assert profile["counts"]["c0"] == 1_100 and sum(profile["counts"].values()) + profile["other"] == 6_000


# --- unusable inputs ------------------------------------------------------------------------------------

def test_missing_features_and_bad_values_are_noted_and_left_out_of_the_share() -> None:
    raw = pd.DataFrame.from_records(
        [{"a": float(x), "b": 1.0, "c": 5.0, "plan": "pro", "trial": True} for x in np.random.default_rng(1).normal(size=600)]
        + [{"a": None, "b": "1.0", "c": float("nan"), "plan": 3, "trial": "yes"}] * 50   # wrong types and absent values
        + [{"b": True, "c": 5.0, "plan": None, "trial": False, "new_key": 1}] * 50
    )
    current = drift.typed(raw, PROFILE)
    assert "d" not in current.columns and "new_key" not in current.columns
    result = drift.compare(PROFILE, current, min_samples=500)
    a, b, d = result.features["a"], result.features["b"], result.features["d"]
    assert a["rows"] == 600 and a["missing"] == 100 and "in 100 of 700 recent inputs (14.3%)" in a["note"]
    assert a["drifted"] is False
    assert d["drifted"] is None and d["statistic"] is None and "absent from all 700 recent inputs" in d["note"]
    assert b["rows"] == 600 and b["drifted"] is True  # a string and a boolean are not numbers
    assert result.features["plan"]["missing"] == 100 and result.features["trial"]["missing"] == 50
    assert "d" not in result.compared
    assert result.drifted_share == pytest.approx(len(result.drifted_features) / len(result.compared))

    few = drift.compare(PROFILE, current, min_samples=650)  # only c and trial have 650 usable values
    assert few.compared == ["c", "trial"] and "600 usable value(s), fewer than min_samples 650" in few.features["a"]["note"]


def test_nothing_comparable() -> None:
    result = drift.compare(PROFILE, pd.DataFrame())
    assert result.compared == [] and result.drifted_share is None and not result.drifted
    with pytest.raises(ValueError, match="unknown drift method"):
        drift.compare(PROFILE, pd.DataFrame(), numeric="chi2")


# --- the check, on SQLite and PostgreSQL ---------------------------------------------------------------

def config(**drift_cfg: Any) -> ModelConfig:
    return ModelConfig(drift={"min_samples": 200, "window_hours": 24} | drift_cfg)


def production(session: Session, settings: Settings, profile: dict[str, Any] | None = PROFILE) -> str:
    version = make_version(session, settings, 1, production=True)
    if profile is not None:
        session.add(FeatureProfile(version_id=version.version_id, rows=profile["rows"], profile=profile))
    session.flush()
    return version.version_id


def log_inputs(session: Session, frame: pd.DataFrame, hours_ago: float = 1.0, model: str = "ctr", prefix: str = "p") -> None:
    now = clock.now()
    rows = frame.astype({"plan": object}).to_dict("records")
    session.execute(sa.insert(PredictionRecord), [
        {"prediction_id": f"{prefix}{i}", "model": model, "features": {k: (v.item() if hasattr(v, "item") else v)
                                                                       for k, v in row.items()},
         "predicted": 0.0, "predicted_at": now - timedelta(hours=hours_ago, seconds=i)}
        for i, row in enumerate(rows)])


def check_events(session: Session) -> list[dict[str, Any]]:
    return [e.payload for e in session.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "check")
                                               .order_by(SystemEvent.id))]


def test_drift_asks_for_a_retrain_and_stores_its_report(session: Session, settings: Settings) -> None:
    version = production(session, settings)
    log_inputs(session, inputs(600, seed=10, shift={"a": 0.6, "c": 0.6, "d": 0.6}))
    log_inputs(session, inputs(300, seed=11), hours_ago=30, prefix="old")  # outside the 24 h window
    result = drift_check.check(session, "ctr", config())
    assert result["status"] == "retrain_needed", result
    assert result["rows"] == 600 and result["production_version"] == version
    assert result["drifted_share"] == pytest.approx(0.5)
    assert "Dataset drift: 3 of 6 features drifted (50% >= 50%) over 600 inputs" in result["message"]
    report = session.get(DriftReport, result["drift_report_id"])
    assert (report.status, report.drifted, report.version_id, report.rows) == ("drift_detected", True, version, 600)
    assert report.features["a"]["drifted"] and not report.features["b"]["drifted"]
    assert set(report.features["a"]) >= {"method", "statistic", "threshold", "drifted", "psi"}
    event = check_events(session)[-1]
    assert (event["check"], event["status"], event["drift_report_id"]) == ("drift", "retrain_needed", report.id)
    assert reports.status(session, settings)["models"]["ctr"]["drift"] == {
        "status": "drift_detected", "drifted_share": 0.5, "share_threshold": 0.5, "report_id": report.id,
        "version_id": version, "checked_at": report.checked_at.isoformat()}

    # a drift retrain started within the cooldown suppresses the next one, recorded with the reason
    session.add(TrainingRun(run_id="r-drift", model="ctr", trigger=Trigger.DRIFT, status="completed",
                            started_at=clock.now() - timedelta(hours=2), drift_report_id=report.id))
    session.flush()
    again = drift_check.check(session, "ctr", config())
    assert again["status"] == "suppressed" and "within the cooldown (24 h)" in again["message"]
    assert session.get(DriftReport, again["drift_report_id"]).status == "drift_detected"
    assert drift_check.check(session, "ctr", config(cooldown_hours=1))["status"] == "retrain_needed"
    assert [e["status"] for e in check_events(session)] == ["retrain_needed", "suppressed", "retrain_needed"]


def test_no_drift_stays_silent(session: Session, settings: Settings) -> None:
    production(session, settings)
    log_inputs(session, inputs(800, seed=12))
    result = drift_check.check(session, "ctr", config())
    assert result["status"] == "no_retrain_needed", result
    assert result["drifted_share"] == 0.0 and "No dataset drift: 0 of 6 features drifted" in result["message"]
    assert session.get(DriftReport, result["drift_report_id"]).status == "no_drift"


def test_without_a_reference_or_recent_inputs_there_is_no_verdict(session: Session, settings: Settings) -> None:
    none = drift_check.check(session, "ctr", config())
    assert none["status"] == "no_reference" and "No production version" in none["message"]
    version = production(session, settings, profile=None)
    unprofiled = drift_check.check(session, "ctr", config())
    assert unprofiled["status"] == "no_reference" and f"{version} has no reference profile" in unprofiled["message"]
    session.add(FeatureProfile(version_id=version, rows=PROFILE["rows"], profile=PROFILE))
    session.flush()
    empty = drift_check.check(session, "ctr", config())
    assert empty["status"] == "insufficient_data" and empty["rows"] == 0
    assert "0 recent input(s) in the last 24 h, need at least 200" in empty["message"]
    log_inputs(session, inputs(150, seed=13))
    assert drift_check.check(session, "ctr", config())["status"] == "insufficient_data"
    statuses = [r.status for r in session.scalars(sa.select(DriftReport).order_by(DriftReport.id))]
    assert statuses == ["no_reference", "no_reference", "insufficient_data", "insufficient_data"]
    assert [e["status"] for e in check_events(session)] == ["no_reference", "no_reference", "insufficient_data",
                                                             "insufficient_data"]
    assert drift_check.latest(session, "ctr").status == "insufficient_data"


def test_every_retrain_records_the_profile_of_its_training_rows(settings: Settings) -> None:
    with session_scope(settings.database_url) as s:
        seed(s, n=300)
    with session_scope(settings.database_url) as s:
        result = retrain.retrain(s, settings, "ctr")
    assert result["status"] == "retrained", result
    with session_scope(settings.database_url) as s:
        row = s.get(FeatureProfile, result["version_id"])
        assert row is not None and row.rows == result["samples"]
        features = row.profile["features"]
        assert set(features) == {"hook_strength", "thumbnail_score", "video_length_s", "hour_of_day", "audience_size_log"}
        hook = features["hook_strength"]
        assert hook["type"] == "numeric" and hook["count"] == result["samples"] and 0 <= hook["min"] <= hook["max"] <= 1


def test_a_reference_with_fewer_values_than_min_samples_is_not_compared() -> None:
    small = drift.build_profile(inputs(300, seed=14), TYPES)
    result = drift.compare(small, inputs(2_000, seed=15), min_samples=1_000)
    assert result.compared == [] and result.drifted_share is None
    assert "the reference has 300 value(s), fewer than min_samples 1000" in result.features["a"]["note"]
    assert drift.compare(small, inputs(2_000, seed=15), min_samples=300).compared == list(TYPES)
