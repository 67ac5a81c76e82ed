"""Producer events as they arrive: the four kinds (purchase, outcome, prediction, feedback), `parse`,
which validates one raw event (services/validation.py), and `document`, the JSON text the per-event
path sends. Storing them is services/events.py.

A purchase is a labelled row (features + value) that also asks for a retrain; an outcome attaches
the real value to a logged prediction.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from retrainer.services import predictions, validation
from retrainer.services.errors import InvalidEvent


@dataclass(frozen=True, slots=True)
class PurchaseEvent:
    model: str
    features: dict[str, float | int | str | bool]
    value: float
    event_id: str | None = None
    occurred_at: datetime | None = None
    type: Literal["purchase"] = "purchase"


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    prediction_id: str
    value: float
    event_id: str | None = None
    occurred_at: datetime | None = None
    type: Literal["outcome"] = "outcome"
    targets: dict[str, float] = field(default_factory=dict)  # second targets' outcomes (ROAS beside CTR)


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """A prediction served elsewhere (the producer's own serving stack), logged for live accuracy.
    Its prediction_id (default: the event_id) is what a later outcome names."""

    model: str
    features: dict[str, float | int | str | bool]
    predicted: float  # a classifier's: its class
    prediction_id: str | None = None
    version_id: str | None = None
    confidence: float | None = None
    proba: dict[str, float] | None = None
    segments: dict[str, str] = field(default_factory=dict)
    event_id: str | None = None
    occurred_at: datetime | None = None  # when it was served
    type: Literal["prediction"] = "prediction"
    targets: dict[str, float] = field(default_factory=dict)  # second targets served beside it (ROAS beside CTR)


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """Accepts and rejects of a model's output in one learning cycle (one of each, or a cycle's counts):
    what the hourly accept-rate check averages (services/accept_rate.py)."""

    model: str
    cycle_id: str
    accepted: int
    rejected: int
    event_id: str | None = None
    occurred_at: datetime | None = None
    type: Literal["feedback"] = "feedback"


Event = PurchaseEvent | OutcomeEvent | PredictionEvent | FeedbackEvent
_REQUIRED = {"purchase": ("model", "features", "value"), "outcome": ("prediction_id", "value"),
             "prediction": ("model", "features", "predicted"), "feedback": ("model", "cycle_id", "accepted", "rejected")}
MAX_FEEDBACK_COUNT = 1_000_000  # accepts or rejects in one event: a cycle's counts, not a running total
_OPTIONAL = {"prediction": ("prediction_id", "version_id", "confidence", "proba", "segments", "targets"),
             "outcome": ("targets",)}  # may be null
_COMMON = ("type", "event_id", "occurred_at")  # event_id and occurred_at may be absent or null


def parse(payload: Any) -> Event:
    """Validate one raw event (dict, JSON text or UTF-8 bytes). Whatever the input, the only error is
    InvalidEvent, whose message names the field and the problem (services/validation.py)."""
    doc = validation.decode(payload)
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in _REQUIRED:
        got = "missing" if "type" not in doc else f"got {validation.show(kind)}"
        raise InvalidEvent(f"type: expected 'purchase', 'outcome', 'prediction' or 'feedback', {got}")
    required = _REQUIRED[kind]
    known = required + _OPTIONAL.get(kind, ()) + _COMMON
    for name in doc:
        if name not in known:
            raise InvalidEvent(f"{validation.show(name)}: unknown field (an event of type {kind} has "
                               f"{', '.join(known)})")
    for name in required:
        if name not in doc:
            raise InvalidEvent(f"{name}: missing (an event of type {kind} needs {', '.join(required)})")
    event_id = doc.get("event_id")
    if event_id is not None:
        event_id = validation.text(event_id, "event_id", validation.MAX_ID_CHARS)
    occurred_at = doc.get("occurred_at")
    if occurred_at is not None:
        occurred_at = validation.moment(occurred_at, "occurred_at")
    if kind == "prediction":
        return _prediction(doc, event_id, occurred_at)
    if kind == "feedback":
        return _feedback(doc, event_id, occurred_at)
    value = validation.number(doc["value"], "value")
    if kind == "outcome":
        prediction_id = validation.text(doc["prediction_id"], "prediction_id", validation.MAX_ID_CHARS)
        return OutcomeEvent(prediction_id, value, event_id, occurred_at,
                            targets=predictions.check_targets(doc.get("targets")))
    model = validation.text(doc["model"], "model", validation.MAX_MODEL_CHARS)
    return PurchaseEvent(model, validation.features(doc["features"]), value, event_id, occurred_at)


def _feedback(doc: dict[Any, Any], event_id: str | None, occurred_at: datetime | None) -> FeedbackEvent:
    counts = {}
    for name in ("accepted", "rejected"):
        value = validation.number(doc[name], name, keep_int=True)
        if not isinstance(value, int) or not 0 <= value <= MAX_FEEDBACK_COUNT:
            raise InvalidEvent(f"{name}: expected a whole number from 0 to {MAX_FEEDBACK_COUNT:,}, got {validation.show(doc[name])}")
        counts[name] = value
    if not counts["accepted"] + counts["rejected"]:
        raise InvalidEvent("accepted, rejected: both 0; a feedback event counts at least one accept or reject")
    return FeedbackEvent(validation.text(doc["model"], "model", validation.MAX_MODEL_CHARS),
                         validation.text(doc["cycle_id"], "cycle_id", validation.MAX_ID_CHARS),
                         counts["accepted"], counts["rejected"], event_id, occurred_at)


def _prediction(doc: dict[Any, Any], event_id: str | None, occurred_at: datetime | None) -> PredictionEvent:
    """The fields predictions.log_prediction checks, checked here already so that a bad prediction is
    refused before it is sent; whether `predicted` is a class is known only from the model (store)."""
    def optional_text(name: str, max_chars: int) -> str | None:
        return None if doc.get(name) is None else validation.text(doc[name], name, max_chars)

    confidence = doc.get("confidence")
    return PredictionEvent(
        model=validation.text(doc["model"], "model", validation.MAX_MODEL_CHARS),
        features=validation.features(doc["features"]),
        predicted=float(validation.number(doc["predicted"], "predicted")),
        prediction_id=optional_text("prediction_id", validation.MAX_ID_CHARS),
        version_id=optional_text("version_id", 120),
        confidence=None if confidence is None else float(validation.number(confidence, "confidence")),
        proba=predictions.check_proba(doc.get("proba")),
        segments=predictions.check_segments(doc.get("segments")),
        targets=predictions.check_targets(doc.get("targets")),
        event_id=event_id,
        occurred_at=occurred_at,
    )


def document(payload: Any) -> str:
    """The event as the compact JSON text the per-event path sends, with an event_id so that a
    re-delivery is a no-op. Validated first: InvalidEvent, and nothing to send, when it is bad."""
    doc = validation.decode(payload)
    if doc.get("event_id") is None:
        doc = {**doc, "event_id": uuid.uuid4().hex}
    parse(doc)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):  # a Python producer's occurred_at
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")
