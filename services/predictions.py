"""Prediction logging and outcome recording.

A prediction is logged when served (status predicted); its outcome arrives later (status
completed, with the actual value and the absolute error). A recorded outcome is also a labelled
training row, so live traffic becomes tomorrow's training data.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import Observation, PredictionRecord, PredictionStatus
from services import registry
from services.errors import NoProductionVersion, PredictionNotFound


def check_features(features: Any, where: str = "features") -> dict[str, float | int | str]:
    if not isinstance(features, dict) or not features:
        raise ValueError(f"{where}: expected a non-empty object of name -> value")
    for name, value in features.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{where}.{name}: expected a number or string, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}.{name}: {value} is not a finite number")
    return features


def check_value(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


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
        prediction_id=prediction_id or uuid.uuid4().hex,
        model=model,
        version_id=version_id,
        features=check_features(features),
        predicted=check_value(predicted, "predicted"),
        confidence=None if confidence is None else check_value(confidence, "confidence"),
        hook_type=hook_type,
        template_id=template_id,
        status=PredictionStatus.PREDICTED,
        predicted_at=at or clock.now(),
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
    values = estimator.predict(pd.DataFrame(rows))
    return [
        log_prediction(session, model, row, float(value), version_id=version.version_id, **segment)
        for row, value in zip(rows, values, strict=True)
    ]


def record_outcome(session: Session, prediction_id: str, actual: float, at: datetime | None = None) -> PredictionRecord:
    """Attach the real outcome; idempotent for the same value (a re-delivered event changes nothing)."""
    actual = check_value(actual, "actual")
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
