"""The new-data and high-confidence errors checks (services/data_triggers.py): each fires on data made to
cross its threshold, stays silent just below it, and records every outcome."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import Observation, PredictionKind, RunStatus, SystemEvent, TrainingRun, Trigger
from retrainer.services import data_triggers, predictions
from tests.support import make_settings, model_config


def observe(session: Session, n: int, start: int = 0, at_hours_ago: float = 0) -> None:
    at = clock.now() - timedelta(hours=at_hours_ago)
    session.execute(sa.insert(Observation), [
        {"model": "ctr", "event_id": f"o{start + i}", "features": {"x": 1.0}, "label": 0.1, "event_time": at,
         "source": "test", "created_at": at} for i in range(n)])


def run_at(session: Session, hours_ago: float, trigger: Trigger = Trigger.SCHEDULE, status: RunStatus = RunStatus.COMPLETED,
           run_id: str = "r1") -> None:
    session.add(TrainingRun(run_id=run_id, model="ctr", trigger=trigger, status=status,
                            started_at=clock.now() - timedelta(hours=hours_ago)))
    session.flush()


def recorded(session: Session, check: str) -> list[str]:
    return [e.payload["status"] for e in session.scalars(
        sa.select(SystemEvent).where(SystemEvent.kind == "check").order_by(SystemEvent.id)) if e.payload["check"] == check]


@pytest.mark.parametrize(("new", "status"), [(99, "no_retrain_needed"), (100, "retrain_needed")])
def test_new_data_fires_at_100_new_samples_after_24_hours(session: Session, settings: Settings, new: int, status: str) -> None:
    observe(session, 500, at_hours_ago=30)  # what the last run saw
    run_at(session, hours_ago=25)
    observe(session, new, start=1000)
    result = data_triggers.check_new_data(session, "ctr", settings.model("ctr"))
    assert (result["status"], result["new_samples"]) == (status, new)
    assert recorded(session, "new_data") == [status]


def test_new_data_waits_for_24_hours_since_the_last_run(session: Session, settings: Settings) -> None:
    observe(session, 500, at_hours_ago=30)
    run_at(session, hours_ago=23)
    observe(session, 300, start=1000)
    result = data_triggers.check_new_data(session, "ctr", settings.model("ctr"))
    assert result["status"] == "no_retrain_needed" and "min_hours 24" in result["message"]
    run_at(session, hours_ago=1, status=RunStatus.SKIPPED, run_id="r2")  # a skipped run did no work: not "the last run"
    assert data_triggers.check_new_data(session, "ctr", settings.model("ctr"))["status"] == "no_retrain_needed"


def test_new_data_without_any_run_counts_every_row_and_caps_the_count(tmp_path, db_url: str) -> None:
    from retrainer.db import session_scope

    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(new_data={"min_samples": 2})})
    with session_scope(db_url) as session:
        observe(session, 450)
        result = data_triggers.check_new_data(session, "ctr", settings.model("ctr"))
        assert result["status"] == "retrain_needed" and result["new_samples"] == 2 * data_triggers.COUNT_CAP
        assert "at least 200 new samples (no run yet)" in result["message"]


def predict(session: Session, n: int, confidence: float, right: bool, kind: str = "classification",
            days_ago: float = 1, start: int = 0, error: float = 1.0) -> None:
    at = clock.now() - timedelta(days=days_ago)
    for i in range(n):
        pid = f"p{start + i}"
        if kind == "classification":
            predictions.log_prediction(session, "ctr", {"x": 1.0}, 1, confidence=confidence, prediction_id=pid,
                                       at=at, kind=kind, proba={"0": 1 - confidence, "1": confidence})
            session.flush()
            predictions.record_outcome(session, pid, 1 if right else 0, at=at)
        else:
            predictions.log_prediction(session, "ctr", {"x": 1.0}, 1.0, confidence=confidence, prediction_id=pid, at=at)
            session.flush()
            predictions.record_outcome(session, pid, 1.0 if right else 1.0 + error, at=at)


@pytest.mark.parametrize(("wrong", "status"), [(9, "no_retrain_needed"), (10, "retrain_needed")])
def test_errors_fire_at_10_confident_wrong_predictions_in_7_days(session: Session, settings: Settings, wrong: int,
                                                                 status: str) -> None:
    predict(session, wrong, 0.9, right=False)
    predict(session, 20, 0.7, right=False, start=100)  # not above 0.7: not counted
    predict(session, 20, 0.95, right=True, start=200)  # right
    predict(session, 20, 0.95, right=False, days_ago=8, start=300)  # too old
    result = data_triggers.check_errors(session, "ctr", settings.model("ctr"), PredictionKind.CLASSIFICATION)
    assert (result["status"], result["errors"]) == (status, wrong)
    assert result["fine_tune"] is (status == "retrain_needed")
    assert recorded(session, "errors") == [status]


def test_errors_of_a_regression_need_a_tolerance(tmp_path, db_url: str) -> None:
    from retrainer.db import session_scope

    plain = make_settings(tmp_path, db_url)
    with session_scope(db_url) as session:
        predict(session, 12, 0.9, right=False, kind="regression", error=0.3)
        predict(session, 12, 0.9, right=False, kind="regression", error=0.05, start=100)
        result = data_triggers.check_errors(session, "ctr", plain.model("ctr"), PredictionKind.REGRESSION)
        assert result["status"] == "not_configured" and "errors.tolerance" in result["message"]
        tolerant = make_settings(tmp_path, db_url, models={"ctr": model_config(errors={"tolerance": 0.1})})
        result = data_triggers.check_errors(session, "ctr", tolerant.model("ctr"), PredictionKind.REGRESSION)
        assert (result["status"], result["errors"]) == ("retrain_needed", 12)


def test_a_fine_tune_it_started_suppresses_the_next_within_the_cooldown(session: Session, settings: Settings) -> None:
    predict(session, 12, 0.9, right=False)
    run_at(session, hours_ago=2, trigger=Trigger.ERRORS)
    result = data_triggers.check_errors(session, "ctr", settings.model("ctr"), PredictionKind.CLASSIFICATION)
    assert result["status"] == "suppressed" and "cooldown (24 h)" in result["message"] and not result["fine_tune"]
