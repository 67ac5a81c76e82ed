"""Prediction logging and outcome recording.

A prediction is logged when served (status predicted); its outcome arrives later (status
completed, with the actual value and the error: |actual - predicted| for numbers, 0/1 for classes). A recorded outcome is also a labelled
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
from retrainer.db.records import Observation, PredictionKind, PredictionRecord, PredictionStatus
from retrainer.models.base import Live, family_class
from retrainer.services import live_rollup, registry, validation
from retrainer.services.errors import InvalidEvent, NoProductionVersion, PredictionNotFound

# The event definitions (services/validation.py): a prediction's features and values pass the same
# checks as a producer's event, so what training later reads is the same either way. Errors are
# InvalidEvent, a ValueError naming the field.

def check_features(features: Any, where: str = "features") -> dict[str, float | int | str]:
    return validation.features(features, where)


def check_value(value: Any, where: str) -> float:
    return float(validation.number(value, where))


def _check_text(value: str | None, where: str, max_chars: int) -> str | None:
    return None if value is None else validation.text(value, where, max_chars)


MAX_SEGMENTS = 16  # keys in a prediction's segments map
MAX_SEGMENT_CHARS = 64  # a segment key or value
MAX_TARGETS = 4  # second targets served beside the first (ROAS beside CTR)
MAX_CLASSES = 100  # classes in a prediction's probabilities


def check_targets(targets: Any, where: str = "targets") -> dict[str, float]:
    """Second targets served beside the first (ROAS beside CTR): a few names -> finite numbers."""
    if targets is None:
        return {}
    if not isinstance(targets, dict):
        raise InvalidEvent(f"{where}: expected an object of name -> number")
    if len(targets) > MAX_TARGETS:
        raise InvalidEvent(f"{where}: {len(targets)} keys; at most {MAX_TARGETS}")
    return {validation.text(k, f"{where}: name {validation.show(k)}", MAX_SEGMENT_CHARS):
            check_value(v, f"{where}.{validation.label(str(k))}") for k, v in targets.items()}


def check_segments(segments: Any, where: str = "segments") -> dict[str, str]:
    """A small map of short text keys to short text values (hook_type: question, region: eu): what
    accuracy.breakdown groups by."""
    if segments is None:
        return {}
    if not isinstance(segments, dict):
        raise InvalidEvent(f"{where}: expected an object of name -> text")
    if len(segments) > MAX_SEGMENTS:
        raise InvalidEvent(f"{where}: {len(segments)} keys; at most {MAX_SEGMENTS}")
    out = {}
    for key, value in segments.items():
        key = validation.text(key, f"{where}: name {validation.show(key)}", MAX_SEGMENT_CHARS)
        out[key] = validation.text(value, f"{where}.{validation.label(key)}", MAX_SEGMENT_CHARS)
    return out


def check_class(value: Any, where: str) -> float:
    """A class label: a whole number >= 0 (stored in the float columns predicted and actual)."""
    number = check_value(value, where)
    if number < 0 or not number.is_integer():
        raise InvalidEvent(f"{where}: a class is a whole number >= 0, got {validation.show(value)}")
    return number


def check_proba(proba: Any, where: str = "proba") -> dict[str, float] | None:
    """Class -> probability, keyed by the class as text ("0", "1"): JSON object keys are text."""
    if proba is None:
        return None
    if not isinstance(proba, dict) or not proba:
        raise InvalidEvent(f"{where}: expected an object of class -> probability")
    if len(proba) > MAX_CLASSES:
        raise InvalidEvent(f"{where}: {len(proba)} classes; at most {MAX_CLASSES}")
    out = {}
    for cls, p in proba.items():
        key = int(cls) if isinstance(cls, str) and cls.isdigit() else cls
        name = _class_name(check_class(key, f"{where}: class {validation.show(cls)}"))
        p = check_value(p, f"{where}.{name}")
        if not 0.0 <= p <= 1.0:
            raise InvalidEvent(f"{where}.{name}: a probability is between 0 and 1, got {p!r}")
        out[name] = p
    return out


def log_prediction(
    session: Session,
    model: str,
    features: dict[str, Any],
    predicted: float,
    version_id: str | None = None,
    confidence: float | None = None,
    segments: dict[str, str] | None = None,
    proba: dict[Any, float] | None = None,
    prediction_id: str | None = None,
    at: datetime | None = None,
    kind: Live | str = Live.REGRESSION,
    targets: dict[str, float] | None = None,
) -> PredictionRecord:
    """Log one served prediction. `kind` is the model family's live kind (metric_spec.live): it says
    how the outcome's error is measured; a classifier's `predicted` is its class."""
    kind = PredictionKind(Live(kind).value)
    classifier = kind == PredictionKind.CLASSIFICATION
    if proba is not None and not classifier:
        raise InvalidEvent(f"proba: only a classifier's prediction has class probabilities (this one is {kind})")
    record = PredictionRecord(
        prediction_id=_check_text(prediction_id or None, "prediction_id", validation.MAX_ID_CHARS) or uuid.uuid4().hex,
        model=validation.text(model, "model", validation.MAX_MODEL_CHARS),
        version_id=_check_text(version_id, "version_id", 120),
        kind=kind,
        features=check_features(features),
        predicted=check_class(predicted, "predicted") if classifier else check_value(predicted, "predicted"),
        proba=check_proba(proba),
        confidence=None if confidence is None else check_value(confidence, "confidence"),
        segments=check_segments(segments),
        targets={name: {"predicted": v} for name, v in check_targets(targets).items()} or None,
        status=PredictionStatus.PREDICTED,
        predicted_at=clock.now() if at is None else validation.moment(at, "at"),
    )
    session.add(record)
    return record


def _class_name(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def predict(session: Session, model: str, rows: list[dict[str, Any]],
            segments: dict[str, str] | None = None,
            prediction_ids: list[str | None] | None = None) -> list[PredictionRecord]:
    """Serve predictions from the production version and log each one (a classifier's with its class
    probabilities). The version is read and its artifact loaded on every call, so a promotion or a
    rollback serves the next prediction. `prediction_ids`: the caller's id of each row (default: new ones)."""
    version = registry.production(session, model)
    if version is None:
        raise NoProductionVersion(model)
    estimator = registry.load_estimator(version)
    kind = family_class(version.family).metric_spec.live
    for i, row in enumerate(rows):
        check_features(row, f"rows[{i}]")
    now = clock.now()
    time = pd.Series([now] * len(rows)) if estimator.needs_time else None
    predicted = estimator.predict(pd.DataFrame(rows), time=time)
    confidence = predicted.confidence()
    classes = [_class_name(c) for c in predicted.classes] if predicted.proba is not None and predicted.classes else None
    return [
        log_prediction(session, model, row, float(value), version_id=version.version_id,
                       confidence=None if confidence is None else float(confidence[i]), segments=segments,
                       proba=None if classes is None else dict(zip(classes, map(float, predicted.proba[i]), strict=True)),
                       prediction_id=prediction_ids[i] if prediction_ids else None, at=now, kind=kind)
        for i, (row, value) in enumerate(zip(rows, predicted.value, strict=True))
    ]


def served(record: PredictionRecord) -> dict[str, Any]:
    """A served prediction as `retrainer predict` and POST /predictions show it."""
    return ({"prediction_id": record.prediction_id, "model": record.model, "version_id": record.version_id,
             "predicted": record.predicted} | ({"proba": record.proba} if record.proba is not None else {}))


def outcome_shown(record: PredictionRecord) -> dict[str, Any]:
    """A recorded outcome as `retrainer outcome` and POST /predictions/{id}/outcome show it."""
    return ({"prediction_id": record.prediction_id, "actual": record.actual, "error": record.error,
             "status": record.status.value} | ({"targets": record.targets} if record.targets else {}))


def outcome_error(kind: PredictionKind, actual: float, predicted: float) -> float:
    """An outcome's loss as prediction_records.error holds it (probation scores a version's rival by it)."""
    if kind == PredictionKind.CLASSIFICATION:
        return 0.0 if actual == predicted else 1.0  # 1 = the wrong class; its mean is the error rate
    return abs(actual - predicted)


def record_outcome(session: Session, prediction_id: str, actual: float, at: datetime | None = None,
                   rollup: live_rollup.Batch | None = None, targets: dict[str, float] | None = None) -> PredictionRecord:
    """Attach the real outcome; idempotent for the same value (a re-delivered event changes nothing).
    The live-accuracy rollup is updated at once, or staged into `rollup` (a batch; see live_rollup.Batch).
    `targets`: the outcomes of second targets the prediction was served with (ROAS beside CTR)."""
    actual = check_value(actual, "actual")
    seconds = check_targets(targets)
    prediction_id = validation.text(prediction_id, "prediction_id", validation.MAX_ID_CHARS)
    at = None if at is None else validation.moment(at, "at")
    record = session.scalar(
        sa.select(PredictionRecord).where(PredictionRecord.prediction_id == prediction_id).with_for_update()
    )
    if record is None:
        raise PredictionNotFound(prediction_id)
    if record.kind == PredictionKind.CLASSIFICATION:
        check_class(actual, "actual")
    if seconds:
        served = record.targets or {}
        if unknown := sorted(set(seconds) - set(served)):
            raise InvalidEvent(f"targets: {', '.join(map(repr, unknown))} not served with prediction {prediction_id!r}"
                               f" (served: {', '.join(sorted(served)) or 'none'})")
        record.targets = {k: v | ({"actual": seconds[k]} if k in seconds else {}) for k, v in served.items()}
    if record.status == PredictionStatus.COMPLETED and record.actual == actual:
        return record
    when = at or clock.now()
    corrected = record.status == PredictionStatus.COMPLETED  # a later, different value replaces the first
    # The hourly rollup moves with the record, in this transaction: new contributions less the old ones.
    key = live_rollup.bucket(record.model, record.version_id, record.predicted_at, record.kind)
    delta = live_rollup.change(record.kind, record.predicted, actual, previous=record.actual if corrected else None)
    if rollup is None:
        live_rollup.add(session, key, delta)
    else:
        rollup.stage(key, delta)
    record.actual, record.error = actual, outcome_error(record.kind, actual, record.predicted)
    record.status, record.completed_at = PredictionStatus.COMPLETED, when
    # The training row is keyed by the prediction, so a correction updates it instead of adding one.
    key = f"outcome:{prediction_id}"
    if corrected:
        session.execute(sa.update(Observation).where(Observation.event_id == key).values(label=actual))
    else:
        session.add(Observation(model=record.model, event_id=key, features=record.features, label=actual,
                                event_time=record.predicted_at, source="outcome", created_at=when))
    return record
