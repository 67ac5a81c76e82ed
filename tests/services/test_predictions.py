"""retrainer.services.predictions: logging predictions, recording outcomes, serving from production."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import Observation, PredictionKind, PredictionRecord, PredictionStatus
from retrainer.demo import synthetic
from retrainer.models.base import Live
from retrainer.services import predictions, registry
from retrainer.services.errors import InvalidEvent, NoProductionVersion, PredictionNotFound
from tests.services.builders import START, count, make_version

FEATURES = {"hook_strength": 0.4, "thumbnail_score": 0.7, "video_length_s": 20.0, "hour_of_day": 9.0,
            "audience_size_log": 5.0}


def test_log_then_outcome_completes_and_writes_one_observation(session: Session) -> None:
    at = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    rec = predictions.log_prediction(session, "ctr", FEATURES, 0.031, version_id="ctr-v1", confidence=0.8,
                                     segments={"hook_type": "question", "template_id": "t2"}, prediction_id="pred-1",
                                     at=at)
    session.flush()
    assert rec.status == PredictionStatus.PREDICTED and rec.actual is None and rec.error is None
    done = predictions.record_outcome(session, "pred-1", 0.04, at=at + timedelta(hours=3))
    session.flush()
    session.expire_all()
    row = session.scalar(sa.select(PredictionRecord).where(PredictionRecord.prediction_id == "pred-1"))
    assert row is not None and row.id == done.id
    assert row.status == PredictionStatus.COMPLETED
    assert row.actual == pytest.approx(0.04)
    assert row.error == pytest.approx(abs(0.04 - 0.031))
    assert row.completed_at == at + timedelta(hours=3)
    assert row.predicted_at == at
    assert (row.segments, row.version_id, row.confidence) == ({"hook_type": "question", "template_id": "t2"}, "ctr-v1", 0.8)
    assert row.kind == PredictionKind.REGRESSION and row.proba is None
    obs = session.scalars(sa.select(Observation)).all()
    assert len(obs) == 1
    assert obs[0].model == "ctr"
    assert obs[0].label == pytest.approx(0.04)
    assert obs[0].features == FEATURES
    assert obs[0].event_time == at  # the prediction's time: when the features were observed
    assert obs[0].source == "outcome"


def test_repeated_outcome_is_idempotent(session: Session) -> None:
    predictions.log_prediction(session, "ctr", FEATURES, 0.03, prediction_id="pred-2")
    first = predictions.record_outcome(session, "pred-2", 0.05, at=datetime(2024, 5, 2, tzinfo=UTC))
    session.flush()
    again = predictions.record_outcome(session, "pred-2", 0.05, at=datetime(2024, 5, 9, tzinfo=UTC))
    session.flush()
    assert again.id == first.id
    assert again.completed_at == datetime(2024, 5, 2, tzinfo=UTC)  # the re-delivery changed nothing
    assert count(session, Observation) == 1
    assert count(session, PredictionRecord) == 1


def test_a_corrected_outcome_updates_the_one_training_row(session: Session) -> None:
    predictions.log_prediction(session, "ctr", FEATURES, 0.03, prediction_id="pred-3")
    predictions.record_outcome(session, "pred-3", 0.02)
    corrected = predictions.record_outcome(session, "pred-3", 0.025)
    session.flush()
    assert corrected.actual == pytest.approx(0.025) and corrected.error == pytest.approx(0.005)
    rows = session.execute(sa.select(Observation.event_id, Observation.label)).all()
    assert [(r.event_id, r.label) for r in rows] == [("outcome:pred-3", pytest.approx(0.025))]


def test_unknown_prediction(session: Session) -> None:
    with pytest.raises(PredictionNotFound) as info:
        predictions.record_outcome(session, "no-such-id", 0.1)
    assert info.value.prediction_id == "no-such-id"
    assert "no-such-id" in str(info.value)
    assert count(session, Observation) == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused_naming_the_field(session: Session, bad: float) -> None:
    with pytest.raises(ValueError, match=r"features\.hook_strength"):
        predictions.log_prediction(session, "ctr", {**FEATURES, "hook_strength": bad}, 0.03)
    with pytest.raises(ValueError, match="predicted"):
        predictions.log_prediction(session, "ctr", FEATURES, bad)
    with pytest.raises(ValueError, match="confidence"):
        predictions.log_prediction(session, "ctr", FEATURES, 0.03, confidence=bad)
    predictions.log_prediction(session, "ctr", FEATURES, 0.03, prediction_id="pred-4")
    session.flush()
    with pytest.raises(ValueError, match="actual"):
        predictions.record_outcome(session, "pred-4", bad)
    session.flush()
    assert count(session, PredictionRecord) == 1
    assert session.scalar(sa.select(PredictionRecord.status)) == PredictionStatus.PREDICTED


@pytest.mark.parametrize("features,field", [
    ([], "features"),  # (empty features and booleans are valid since the timing family and boolean features)
    ({"flag": None}, "features.flag"),
    ({"nested": {"a": 1}}, "features.nested"),
    ("0.3", "features"),
])
def test_malformed_features(session: Session, features: object, field: str) -> None:
    with pytest.raises(ValueError) as info:
        predictions.log_prediction(session, "ctr", features, 0.03)  # type: ignore[arg-type]
    assert str(info.value).startswith(field)


def test_predict_without_production(session: Session) -> None:
    with pytest.raises(NoProductionVersion) as info:
        predictions.predict(session, "ctr", [FEATURES])
    assert info.value.model == "ctr"
    assert count(session, PredictionRecord) == 0


def test_predict_serves_production_and_logs(settings: Settings, session: Session) -> None:
    version = make_version(session, settings, 1)
    registry.swap_production(session, "ctr", version.version_id, None)
    rows = [r.features for r in synthetic.generate(5, START, START + timedelta(days=1), seed=99)]
    with clock.frozen(datetime(2024, 5, 5, tzinfo=UTC)):
        logged = predictions.predict(session, "ctr", rows, segments={"hook_type": "story"})
    session.flush()
    expected = registry.load_estimator(version).predict(pd.DataFrame(rows)).value
    assert [r.version_id for r in logged] == ["ctr-v1"] * 5
    np.testing.assert_allclose([r.predicted for r in logged], expected)
    assert [r.segments for r in logged] == [{"hook_type": "story"}] * 5
    assert {r.proba for r in logged} == {None}
    assert {r.predicted_at for r in logged} == {datetime(2024, 5, 5, tzinfo=UTC)}
    assert count(session, PredictionRecord, PredictionRecord.status == PredictionStatus.PREDICTED) == 5
    with pytest.raises(ValueError, match=r"rows\[1\]\.hook_strength"):
        predictions.predict(session, "ctr", [rows[0], {**rows[1], "hook_strength": math.nan}])


@pytest.mark.parametrize("kwargs,field", [
    ({"features": {**FEATURES, "hook_strength": 10**400}}, "features.hook_strength: integer outside ±1e15"),
    ({"features": {**FEATURES, "hook_type": "a\x00"}}, "features.hook_type: contains a NUL character"),
    ({"features": {**FEATURES, "k\ud800": 1.0}}, "features: name 'k\\ud800': contains a lone surrogate"),
    ({"predicted": 1.7e308}, "predicted: 1.7e+308 is outside ±1e15"),
    ({"predicted": True}, "predicted: expected a number, got a boolean"),
    ({"confidence": "0.9"}, "confidence: expected a number, got string"),
    ({"model": "ctr\x00"}, "model: contains a NUL character"),
    ({"prediction_id": "p" * 65}, "prediction_id: 65 characters; at most 64"),
    ({"segments": {"hook_type": "q\ud800"}}, "segments.hook_type: contains a lone surrogate"),
    ({"segments": {"k": 1}}, "segments.k: expected a string, got "),
    ({"segments": {"k": "v" * 65}}, "segments.k: 65 characters; at most 64"),
    ({"segments": {f"k{i}": "v" for i in range(17)}}, "segments: 17 keys; at most 16"),
    ({"segments": ["a"]}, "segments: expected an object"),
    ({"proba": {"0": 0.5}}, "proba: only a classifier's prediction"),
    ({"at": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))}, "at: 9999-12-31T23:00:00-05:00 is outside"),
])
def test_a_logged_prediction_gets_the_checks_of_an_event(session: Session, kwargs: dict, field: str) -> None:
    args = {"model": "ctr", "features": FEATURES, "predicted": 0.03} | kwargs
    with pytest.raises(InvalidEvent) as info:
        predictions.log_prediction(session, **args)
    assert str(info.value).startswith(field)
    session.flush()
    assert count(session, PredictionRecord) == 0


def test_an_outcome_gets_the_checks_of_an_event(session: Session) -> None:
    predictions.log_prediction(session, "ctr", FEATURES, 0.03, prediction_id="pred-5")
    session.flush()
    with pytest.raises(InvalidEvent, match="^actual: expected a number, got a boolean"):
        predictions.record_outcome(session, "pred-5", True)
    with pytest.raises(InvalidEvent, match="^prediction_id: contains a NUL character"):
        predictions.record_outcome(session, "pred-5\x00", 0.1)  # PostgreSQL would raise DataError
    with pytest.raises(InvalidEvent, match="^at: "):
        predictions.record_outcome(session, "pred-5", 0.1, at=datetime(1969, 1, 1, tzinfo=UTC))
    assert count(session, Observation) == 0


def test_a_classifier_outcome_error_is_right_or_wrong(session: Session) -> None:
    for pid, actual in (("c-right", 1), ("c-wrong", 0)):
        predictions.log_prediction(session, "churn", FEATURES, 1, prediction_id=pid, kind=Live.CLASSIFICATION,
                                   proba={0: 0.3, "1": 0.7}, confidence=0.7)
        session.flush()
        predictions.record_outcome(session, pid, actual)
    session.flush()
    rows = {r.prediction_id: r for r in session.scalars(sa.select(PredictionRecord))}
    assert rows["c-right"].error == 0.0 and rows["c-wrong"].error == 1.0
    assert rows["c-right"].proba == {"0": 0.3, "1": 0.7} and rows["c-right"].kind == PredictionKind.CLASSIFICATION


def test_a_forecast_outcome_error_is_in_hours(session: Session) -> None:
    predictions.log_prediction(session, "timing", {}, 10.5, prediction_id="t-1", kind=Live.FORECAST)
    session.flush()
    assert predictions.record_outcome(session, "t-1", 4.0).error == pytest.approx(6.5)


@pytest.mark.parametrize("kwargs,field", [
    ({"predicted": 0.5}, "predicted: a class is a whole number >= 0, got 0.5"),
    ({"predicted": -1}, "predicted: a class is a whole number >= 0"),
    ({"proba": {"a": 0.5}}, "proba: class 'a': expected a number"),
    ({"proba": {"0": 1.5}}, "proba.0: a probability is between 0 and 1"),
    ({"proba": {}}, "proba: expected an object of class -> probability"),
])
def test_a_classifier_prediction_is_a_class(session: Session, kwargs: dict, field: str) -> None:
    args = {"model": "churn", "features": FEATURES, "predicted": 1, "kind": Live.CLASSIFICATION} | kwargs
    with pytest.raises(InvalidEvent) as info:
        predictions.log_prediction(session, **args)
    assert str(info.value).startswith(field)


def test_a_classifier_outcome_is_a_class(session: Session) -> None:
    predictions.log_prediction(session, "churn", FEATURES, 1, prediction_id="c-1", kind=Live.CLASSIFICATION)
    session.flush()
    with pytest.raises(InvalidEvent, match="^actual: a class is a whole number"):
        predictions.record_outcome(session, "c-1", 0.4)
