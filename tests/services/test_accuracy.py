"""retrainer.services.accuracy: live accuracy aggregated by the database equals numpy/pandas on the same
rows, for each live kind (regression, classification, forecast), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import AccuracyCheck, Settings
from retrainer.db.records import ModelVersion, RunStatus, SystemEvent, TrainingRun, Trigger
from retrainer.models.base import Live
from retrainer.services import accuracy, predictions

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
HOOKS = ("question", "stat", "story")
REFERENCE_KEYS = {"status", "model", "production_version", "current_accuracy", "threshold", "checked_at", "message"}
# the kind's own metrics, and (ctr only) the CTR reference's names for them
ACCURACY_KEYS = {"mae", "rmse", "r2", "within_20pct", "count",
                 "ctr_mae", "ctr_rmse", "ctr_r2", "ctr_accuracy", "total_predictions"}
REG = Live.REGRESSION


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def expected(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    err = actual - predicted
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": float(1 - np.sum(err**2) / np.sum((actual - actual.mean()) ** 2)),
        "within_20pct": float(np.mean(np.abs(err) <= 0.2 * np.abs(actual))),
        "count": len(actual),
    }


def assert_matches(acc: accuracy.Accuracy, exp: dict[str, float]) -> None:
    assert acc.count == exp["count"]
    assert set(acc.metrics) == set(exp) - {"count"}
    for key in acc.metrics:
        if exp[key] is None:
            assert acc[key] is None, key
        else:
            assert acc[key] == pytest.approx(exp[key], abs=1e-9, rel=0), key


def populate(session: Session, n: int = 120, seed: int = 0, model: str = "ctr", version_id: str | None = None,
             age_days: tuple[float, float] = (0.01, 6.9), noise: float = 0.01, prefix: str = "p") -> dict[str, np.ndarray]:
    """`n` completed predictions inside the window; returns what was written, for numpy."""
    rng = np.random.default_rng(seed)
    actual = rng.uniform(0.01, 0.08, n).round(6)
    predicted = (actual + rng.normal(0, noise, n)).round(6)
    hooks = np.array([HOOKS[i % len(HOOKS)] for i in range(n)])
    for i in range(n):
        at = NOW - timedelta(days=float(rng.uniform(*age_days)))
        pid = f"{prefix}{seed}-{i}"
        predictions.log_prediction(session, model, {"x": float(i)}, float(predicted[i]), version_id=version_id,
                                   segments={"hook_type": str(hooks[i])}, prediction_id=pid, at=at)
        session.flush()
        predictions.record_outcome(session, pid, float(actual[i]), at=at + timedelta(hours=1))
    session.flush()
    return {"actual": actual, "predicted": predicted, "hook": hooks}


def test_sql_aggregates_equal_numpy(session: Session) -> None:
    data = populate(session)
    acc = accuracy.live_accuracy(session, "ctr", lookback_days=7, kind=REG)
    assert_matches(acc, expected(data["actual"], data["predicted"]))
    assert acc.as_dict()["count"] == 120
    assert 0 < acc["within_20pct"] < 1  # a fraction; a meaningful mix, not a degenerate all/none case


def test_window_excludes_old_rows_and_counts_only_completed(session: Session) -> None:
    data = populate(session, n=60, seed=1)
    populate(session, n=25, seed=2, age_days=(7.5, 30), noise=0.2)  # older than the look-back: ignored
    populate(session, n=10, seed=3, model="other", noise=0.3)  # another model: ignored
    for i in range(15):  # predictions without an outcome yet: ignored
        predictions.log_prediction(session, "ctr", {"x": 1.0}, 0.9, prediction_id=f"open-{i}",
                                   at=NOW - timedelta(days=1))
    session.flush()
    acc = accuracy.live_accuracy(session, "ctr", lookback_days=7, kind=REG)
    assert_matches(acc, expected(data["actual"], data["predicted"]))
    # a wider window takes the old rows in
    assert accuracy.live_accuracy(session, "ctr", lookback_days=31, kind=REG).count == 85


def test_filter_by_version(session: Session) -> None:
    a = populate(session, n=40, seed=4, version_id="ctr-v1", prefix="a")
    b = populate(session, n=30, seed=5, version_id="ctr-v2", prefix="b", noise=0.03)
    assert_matches(accuracy.live_accuracy(session, "ctr", version_id="ctr-v1", kind=REG), expected(a["actual"], a["predicted"]))
    assert_matches(accuracy.live_accuracy(session, "ctr", version_id="ctr-v2", kind=REG), expected(b["actual"], b["predicted"]))
    assert accuracy.live_accuracy(session, "ctr", kind=REG).count == 70


def test_no_rows(session: Session) -> None:
    for kind in Live:
        acc = accuracy.live_accuracy(session, "ctr", kind=kind)
        assert acc.count == 0 and acc.as_dict() == dict.fromkeys([*acc.metrics, "count"]) | {"count": 0}


def test_breakdown_by_a_segment_key(session: Session) -> None:
    data = populate(session, n=90, seed=6)
    parts = accuracy.breakdown(session, "ctr", by="hook_type", kind=REG)
    assert sorted(parts) == sorted(HOOKS)
    for hook in HOOKS:
        mask = data["hook"] == hook
        assert_matches(parts[hook], expected(data["actual"][mask], data["predicted"][mask]))
    assert sum(p.count for p in parts.values()) == 90
    assert accuracy.breakdown(session, "ctr", by="region", kind=REG) == {}  # no row has that key


def test_breakdown_by_version(session: Session) -> None:
    a = populate(session, n=40, seed=15, version_id="ctr-v1", prefix="a")
    b = populate(session, n=30, seed=16, version_id="ctr-v2", prefix="b", noise=0.03)
    parts = accuracy.breakdown(session, "ctr", by="version_id", kind=REG)
    assert sorted(parts) == ["ctr-v1", "ctr-v2"]
    assert_matches(parts["ctr-v1"], expected(a["actual"], a["predicted"]))
    assert_matches(parts["ctr-v2"], expected(b["actual"], b["predicted"]))


def _production(session: Session, version_id: str = "ctr-v1", metrics: dict[str, float] | None = None) -> None:
    session.add(ModelVersion(
        version_id=version_id, model="ctr", number=int(version_id.rsplit("v", 1)[1]), family="ctr",
        algorithm="xgboost", is_production=True, num_training_samples=1, training_duration_seconds=1.0,
        hyperparameters={}, metrics=metrics or {}, artifact_uri="/unused", artifact_sha256="0" * 64, library_versions={},
    ))
    session.flush()


def test_check_insufficient_data(session: Session) -> None:
    populate(session, n=20, seed=7)
    result = accuracy.check(session, "ctr", AccuracyCheck(min_samples=50), "ctr")
    assert REFERENCE_KEYS | {"count"} <= set(result)
    assert set(result["current_accuracy"]) == ACCURACY_KEYS
    assert result["status"] == "insufficient_data"
    assert result["count"] == 20
    assert result["current_accuracy"]["total_predictions"] == 20
    assert "50" in result["message"]
    assert result["production_version"] is None
    assert result["checked_at"] == NOW.isoformat()


def test_check_no_retrain_needed(session: Session) -> None:
    data = populate(session, n=60, seed=8, noise=0.005)
    result = accuracy.check(session, "ctr", AccuracyCheck(), "ctr")
    assert REFERENCE_KEYS <= set(result)
    assert result["status"] == "no_retrain_needed"
    assert result["threshold"] == 0.02
    exp = expected(data["actual"], data["predicted"])
    assert exp["mae"] < 0.02
    assert result["current_accuracy"]["ctr_mae"] == pytest.approx(exp["mae"], abs=1e-9)
    assert result["current_accuracy"]["ctr_rmse"] == pytest.approx(exp["rmse"], abs=1e-9)
    assert result["current_accuracy"]["total_predictions"] == 60


def test_check_retrain_needed_measures_the_production_version(session: Session) -> None:
    _production(session, "ctr-v2")
    bad = populate(session, n=60, seed=9, noise=0.06, version_id="ctr-v2", prefix="bad")
    populate(session, n=200, seed=10, noise=0.001, version_id="ctr-v1", prefix="old")  # the old version's traffic
    result = accuracy.check(session, "ctr", AccuracyCheck(), "ctr")
    assert REFERENCE_KEYS <= set(result)
    assert result["status"] == "retrain_needed"
    assert result["production_version"] == "ctr-v2"
    exp = expected(bad["actual"], bad["predicted"])
    assert exp["mae"] > 0.02
    assert result["current_accuracy"]["ctr_mae"] == pytest.approx(exp["mae"], abs=1e-9)
    assert result["current_accuracy"]["total_predictions"] == 60
    assert "degraded" in result["message"]


def test_relative_threshold_fires_below_the_absolute_one(session: Session) -> None:
    """Live MAE ~0.008 is far under the absolute 0.02 but 4x the version's holdout MAE of 0.002."""
    _production(session, "ctr-v3", metrics={"mae": 0.002})
    populate(session, n=80, seed=12, noise=0.01, version_id="ctr-v3", prefix="rel")
    assert accuracy.check(session, "ctr", AccuracyCheck(), "ctr")["status"] == "no_retrain_needed"
    result = accuracy.check(session, "ctr", AccuracyCheck(relative_pct=50), "ctr")
    assert result["status"] == "retrain_needed"
    assert result["threshold"] == pytest.approx(0.003)
    assert result["relative"] == {"pct": 50, "holdout_value": 0.002, "threshold": pytest.approx(0.003),
                                  "absolute_threshold": 0.02}
    # a version without a holdout figure: the absolute threshold alone decides
    session.execute(sa.update(ModelVersion).where(ModelVersion.version_id == "ctr-v3").values(is_production=False))
    _production(session, "ctr-v4", metrics={})
    populate(session, n=80, seed=13, noise=0.01, version_id="ctr-v4", prefix="rel4")
    assert accuracy.check(session, "ctr", AccuracyCheck(relative_pct=50), "ctr")["status"] == "no_retrain_needed"


def _run(session: Session, run_id: str, hours_ago: float, outcome: str, failed: tuple[str, ...] = ()) -> None:
    decision = {"rules": [{"rule": rule, "passed": False} for rule in failed]} if failed else None
    session.add(TrainingRun(run_id=run_id, model="ctr", trigger=Trigger.ACCURACY, status=RunStatus.COMPLETED,
                            outcome=outcome, started_at=NOW - timedelta(hours=hours_ago), decision=decision))
    session.flush()


def test_a_candidate_kept_only_by_the_promotion_cooldown_does_not_silence_the_check(session: Session) -> None:
    populate(session, n=60, seed=14, noise=0.06)
    cfg = AccuracyCheck(cooldown_hours=12)
    _run(session, "waiting", 2, "kept", failed=("cooldown",))  # better, but production changed too recently
    _run(session, "small", 3, "kept", failed=("evidence",))  # better, on too few holdout rows
    assert accuracy.check(session, "ctr", cfg, "ctr")["status"] == "retrain_needed"
    _run(session, "not-better", 4, "kept", failed=("improvement", "significance", "cooldown"))
    assert accuracy.check(session, "ctr", cfg, "ctr")["status"] == "no_retrain_needed"


def test_check_cooldown_after_a_kept_candidate(session: Session) -> None:
    populate(session, n=60, seed=11, noise=0.06)
    cfg = AccuracyCheck(cooldown_hours=12)
    _run(session, "too-old", 30, "kept")  # outside the cooldown
    _run(session, "no-result", 1, "insufficient_data")  # trained nothing: no cooldown
    _run(session, "promoted", 2, "retrained")  # a new version went live: its accuracy is what counts
    assert accuracy.check(session, "ctr", cfg, "ctr")["status"] == "retrain_needed"
    _run(session, "recent", 3, "kept")
    cooled = accuracy.check(session, "ctr", cfg, "ctr")
    assert cooled["status"] == "no_retrain_needed"
    assert "cooldown" in cooled["message"] and "kept" in cooled["message"]
    # still degraded after a kept candidate: a person must look (an alert, sent to Slack by the task)
    alert = session.get(SystemEvent, cooled["alert_event_id"])
    assert alert.kind == "alert" and alert.message.startswith("ctr: still degraded after a kept candidate: mae=")
    checks = session.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "check")).all()
    assert [e.payload["status"] for e in checks] == ["retrain_needed", "no_retrain_needed"]  # every outcome recorded
    # cooldown 0 turns it off
    assert accuracy.check(session, "ctr", AccuracyCheck(cooldown_hours=0), "ctr")["status"] == "retrain_needed"


def test_cooldown_ignores_runs_before_the_current_version_went_live(session: Session) -> None:
    _production(session, "ctr-v3")
    session.get(ModelVersion, "ctr-v3").promoted_at = NOW - timedelta(hours=1)
    populate(session, n=60, seed=14, noise=0.06, version_id="ctr-v3")
    _run(session, "kept-before-promotion", 3, "kept")
    assert accuracy.check(session, "ctr", AccuracyCheck(cooldown_hours=12), "ctr")["status"] == "retrain_needed"
    _run(session, "kept-after-promotion", 0.5, "kept")
    assert accuracy.check(session, "ctr", AccuracyCheck(cooldown_hours=12), "ctr")["status"] == "no_retrain_needed"


def test_check_uses_model_config_defaults(settings: Settings, session: Session) -> None:
    populate(session, n=49, seed=12, noise=0.06)
    assert accuracy.check(session, "ctr", settings.model("ctr").accuracy, "ctr")["status"] == "insufficient_data"
    populate(session, n=1, seed=13, noise=0.06)
    assert accuracy.check(session, "ctr", settings.model("ctr").accuracy, "ctr")["status"] == "retrain_needed"


# --- classification and forecast: SQL against pandas on the same rows ----------------------------

def _log(session: Session, kind: Live, model: str, predicted: np.ndarray, actual: np.ndarray, seed: int,
         proba: bool = False) -> None:
    rng = np.random.default_rng(seed)
    for i, (p, a) in enumerate(zip(predicted, actual, strict=True)):
        at = NOW - timedelta(days=float(rng.uniform(0.01, 6.9)))
        pid = f"{model}-{seed}-{i}"
        predictions.log_prediction(session, model, {"x": float(i)}, float(p), prediction_id=pid, at=at, kind=kind,
                                   proba={str(int(p)): 0.8} if proba else None)
        session.flush()
        predictions.record_outcome(session, pid, float(a), at=at + timedelta(hours=1))
    session.flush()


def classification_reference(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    frame = pd.DataFrame({"p": predicted, "a": actual})
    binary = frame.isin([0, 1]).all().all()
    tp = int(((frame.p == 1) & (frame.a == 1)).sum())
    return {
        "accuracy": float((frame.p == frame.a).mean()),
        "precision": tp / int((frame.p == 1).sum()) if binary else None,
        "recall": tp / int((frame.a == 1).sum()) if binary else None,
        "count": len(frame),
    }


def forecast_reference(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = (pd.Series(actual) - pd.Series(predicted)).abs()
    return {"mae": float(err.mean()), "rmse": float(np.sqrt((err**2).mean())),
            **{f"within_{h}h": float((err <= h).mean()) for h in (6, 12, 24)}, "count": len(err)}


def test_binary_classification_equals_pandas(session: Session) -> None:
    rng = np.random.default_rng(20)
    actual = rng.integers(0, 2, 150)
    predicted = np.where(rng.uniform(size=150) < 0.75, actual, 1 - actual)
    _log(session, Live.CLASSIFICATION, "churn", predicted, actual, seed=20, proba=True)
    acc = accuracy.live_accuracy(session, "churn", kind=Live.CLASSIFICATION)
    assert_matches(acc, classification_reference(predicted, actual))
    assert 0.5 < acc["accuracy"] < 1 and acc["precision"] is not None


def test_multiclass_classification_has_no_precision(session: Session) -> None:
    rng = np.random.default_rng(21)
    actual = rng.integers(0, 4, 120)
    predicted = np.where(rng.uniform(size=120) < 0.6, actual, rng.integers(0, 4, 120))
    _log(session, Live.CLASSIFICATION, "intent", predicted, actual, seed=21)
    acc = accuracy.live_accuracy(session, "intent", kind=Live.CLASSIFICATION)
    assert_matches(acc, classification_reference(predicted, actual))
    assert acc["precision"] is None and acc["recall"] is None


def test_forecast_equals_pandas(session: Session) -> None:
    rng = np.random.default_rng(22)
    actual = rng.uniform(1, 96, 130).round(3)
    predicted = (actual + rng.normal(0, 10, 130)).round(3)
    _log(session, Live.FORECAST, "timing", predicted, actual, seed=22)
    acc = accuracy.live_accuracy(session, "timing", kind=Live.FORECAST)
    assert_matches(acc, forecast_reference(predicted, actual))
    assert 0 < acc["within_6h"] < acc["within_12h"] < acc["within_24h"] <= 1


# --- the check by metric and threshold ----------------------------------------------------------

def test_check_by_classification_accuracy_breaches_below(session: Session) -> None:
    rng = np.random.default_rng(23)
    actual = rng.integers(0, 2, 80)
    predicted = np.where(rng.uniform(size=80) < 0.6, actual, 1 - actual)
    _log(session, Live.CLASSIFICATION, "churn", predicted, actual, seed=23)
    share = float(np.mean(predicted == actual))
    low = accuracy.check(session, "churn", AccuracyCheck(threshold=share + 0.05), "classifier")
    assert low["status"] == "retrain_needed" and low["metric"] == "accuracy"
    assert set(low["current_accuracy"]) == {"accuracy", "precision", "recall", "count"}
    assert low["current_accuracy"]["accuracy"] == pytest.approx(share)
    assert f"< {share + 0.05}" in low["message"]
    fine = accuracy.check(session, "churn", AccuracyCheck(threshold=share - 0.05), "classifier")
    assert fine["status"] == "no_retrain_needed"
    by_recall = accuracy.check(session, "churn", AccuracyCheck(metric="recall", threshold=1.0), "classifier")
    assert by_recall["status"] == "retrain_needed" and "recall=" in by_recall["message"]
    # no threshold configured and none from the family: measured, never a retrain
    unset = accuracy.check(session, "churn", AccuracyCheck(), "classifier")
    assert unset["status"] == "no_retrain_needed" and unset["threshold"] is None
    assert "models.churn.accuracy.threshold" in unset["message"]


def test_check_by_forecast_mae_breaches_above(session: Session) -> None:
    rng = np.random.default_rng(24)
    actual = rng.uniform(1, 48, 60)
    _log(session, Live.FORECAST, "timing", actual + 8.0, actual, seed=24)
    result = accuracy.check(session, "timing", AccuracyCheck(threshold=6.0), "timing")
    assert result["status"] == "retrain_needed" and result["metric"] == "mae"
    assert result["current_accuracy"]["mae"] == pytest.approx(8.0)
    assert "ctr_mae" not in result["current_accuracy"]
    by_share = accuracy.check(session, "timing", AccuracyCheck(metric="within_12h", threshold=0.9), "timing")
    assert by_share["status"] == "no_retrain_needed"  # every error is 8 h: all within 12 h


def test_old_mae_threshold_key_is_an_alias(session: Session) -> None:
    populate(session, n=60, seed=25, noise=0.005)
    cfg = AccuracyCheck(mae_threshold=0.001)
    assert (cfg.metric, cfg.threshold) == ("mae", 0.001)
    result = accuracy.check(session, "ctr", cfg, "ctr")
    assert result["status"] == "retrain_needed" and result["threshold"] == 0.001


def test_check_breaks_the_production_version_down_by_configured_segments(session: Session) -> None:
    data = populate(session, n=90, seed=4, version_id="ctr-v1")
    populate(session, n=30, seed=5, version_id="ctr-v0", prefix="old")  # another version: not in its figures
    session.add(ModelVersion(version_id="ctr-v1", model="ctr", number=1, family="ctr", algorithm="xgboost",
                             num_training_samples=1, training_duration_seconds=0.1, hyperparameters={}, metrics={},
                             artifact_uri="x", artifact_sha256="0" * 64, library_versions={}, is_production=True))
    session.flush()
    result = accuracy.check(session, "ctr", AccuracyCheck(segments=["hook_type", "absent"]), "ctr")
    by_hook = result["segments"]["hook_type"]
    assert set(by_hook) == set(HOOKS) and result["segments"]["absent"] == {}
    for hook in HOOKS:
        chosen = data["hook"] == hook
        assert by_hook[hook]["count"] == int(chosen.sum())
        assert by_hook[hook]["mae"] == pytest.approx(np.abs(data["actual"][chosen] - data["predicted"][chosen]).mean())


def test_a_second_target_is_measured_beside_the_first_and_can_start_a_retrain(session: Session) -> None:
    from retrainer.config.triggers import SecondTarget
    from retrainer.services.errors import InvalidEvent

    rng = np.random.default_rng(3)
    roas_predicted = rng.uniform(1, 3, 60)
    roas_actual = roas_predicted + rng.normal(0, 0.5, 60)
    for i in range(60):
        at = NOW - timedelta(days=1, minutes=i)
        predictions.log_prediction(session, "ctr", {"x": 1.0}, 0.03, prediction_id=f"t{i}", at=at,
                                   targets={"roas": float(roas_predicted[i])})
        session.flush()
        predictions.record_outcome(session, f"t{i}", 0.031, at=at, targets={"roas": float(roas_actual[i])})
    mae = float(np.abs(roas_actual - roas_predicted).mean())
    # CTR itself is fine (MAE 0.001 <= 0.02); ROAS is off by more than 0.2 on average
    cfg = AccuracyCheck(second_target=SecondTarget(target="roas", metric="mae", threshold=0.2))
    result = accuracy.check(session, "ctr", cfg, "ctr")
    assert result["second_target"]["value"] == pytest.approx(mae) and result["second_target"]["count"] == 60
    assert result["status"] == "retrain_needed" and f"roas mae={mae:.4f} > 0.2" in result["message"]
    quiet = AccuracyCheck(second_target=SecondTarget(target="roas", metric="mae", threshold=mae + 0.01))
    assert accuracy.check(session, "ctr", quiet, "ctr")["status"] == "no_retrain_needed"

    with pytest.raises(InvalidEvent, match="targets: 'cpa' not served with prediction 't0' \\(served: roas\\)"):
        predictions.record_outcome(session, "t0", 0.031, targets={"cpa": 1.0})
    with pytest.raises(InvalidEvent, match="targets.roas"):
        predictions.log_prediction(session, "ctr", {"x": 1.0}, 0.03, targets={"roas": float("nan")})
