"""Prediction logging and outcome recording.

A prediction is logged when served (status predicted); its outcome arrives later (status
completed, with the actual value and the absolute error). A recorded outcome is also a labelled
training row, so live traffic becomes tomorrow's training data.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import Observation, PredictionRecord, PredictionStatus
from retrainer.services import registry, validation
from retrainer.services.errors import NoProductionVersion, PredictionNotFound

# The event definitions (services/validation.py): a prediction's features and values pass the same
# checks as a producer's event, so what training later reads is the same either way. Errors are
# InvalidEvent, a ValueError naming the field.

def check_features(features: Any, where: str = "features") -> dict[str, float | int | str]:
    return validation.features(features, where)


def check_value(value: Any, where: str) -> float:
    return float(validation.number(value, where))


def _check_text(value: str | None, where: str, max_chars: int) -> str | None:
    return None if value is None else validation.text(value, where, max_chars)


def log_prediction(
    session: Session,
    model: str,
    features: dict[str, Any],
    predicted: float,
    version_id: str | None = None,
    confidence: float | None = None,
    hook_type: str | None = None,
    template_id: str | None = None,
    prediction_id: str | None = None,
    at: datetime | None = None,
) -> PredictionRecord:
    record = PredictionRecord(
        prediction_id=_check_text(prediction_id or None, "prediction_id", validation.MAX_ID_CHARS) or uuid.uuid4().hex,
        model=validation.text(model, "model", validation.MAX_MODEL_CHARS),
        version_id=_check_text(version_id, "version_id", 120),
        features=check_features(features),
        predicted=check_value(predicted, "predicted"),
        confidence=None if confidence is None else check_value(confidence, "confidence"),
        hook_type=_check_text(hook_type, "hook_type", 64),
        template_id=_check_text(template_id, "template_id", 64),
        status=PredictionStatus.PREDICTED,
        predicted_at=clock.now() if at is None else validation.moment(at, "at"),
    )
    session.add(record)
    return record


def predict(session: Session, model: str, rows: list[dict[str, Any]], **segment: Any) -> list[PredictionRecord]:
    """Serve predictions from the production version and log each one."""
    version = registry.production(session, model)
    if version is None:
        raise NoProductionVersion(model)
    estimator = registry.load_estimator(version)
    for i, row in enumerate(rows):
        check_features(row, f"rows[{i}]")
    now = clock.now()
    time = pd.Series([now] * len(rows)) if estimator.needs_time else None
    predicted = estimator.predict(pd.DataFrame(rows), time=time)
    confidence = predicted.confidence()
    return [
        log_prediction(session, model, row, float(value), version_id=version.version_id,
                       confidence=None if confidence is None else float(confidence[i]), at=now, **segment)
        for i, (row, value) in enumerate(zip(rows, predicted.value, strict=True))
    ]


def record_outcome(session: Session, prediction_id: str, actual: float, at: datetime | None = None) -> PredictionRecord:
    """Attach the real outcome; idempotent for the same value (a re-delivered event changes nothing)."""
    actual = check_value(actual, "actual")
    prediction_id = validation.text(prediction_id, "prediction_id", validation.MAX_ID_CHARS)
    at = None if at is None else validation.moment(at, "at")
    record = session.scalar(
        sa.select(PredictionRecord).where(PredictionRecord.prediction_id == prediction_id).with_for_update()
    )
    if record is None:
        raise PredictionNotFound(prediction_id)
    if record.status == PredictionStatus.COMPLETED and record.actual == actual:
        return record
    when = at or clock.now()
    corrected = record.status == PredictionStatus.COMPLETED  # a later, different value replaces the first
    record.actual, record.error = actual, abs(actual - record.predicted)
    record.status, record.completed_at = PredictionStatus.COMPLETED, when
    # The training row is keyed by the prediction, so a correction updates it instead of adding one.
    key = f"outcome:{prediction_id}"
    if corrected:
        session.execute(sa.update(Observation).where(Observation.event_id == key).values(label=actual))
    else:
        session.add(Observation(model=record.model, event_id=key, features=record.features, label=actual,
                                event_time=record.predicted_at, source="outcome", created_at=when))
    return record
