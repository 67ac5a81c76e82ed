"""Producers: events onto the events queue (POST /events), a prediction served by the production version
and logged (POST /predictions), and its outcome (POST /predictions/{id}/outcome). Each endpoint is the
call `retrainer event`, `retrainer predict` and `retrainer outcome` make."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy.exc
from fastapi import APIRouter, Body, HTTPException, Path, status
from fastapi.exceptions import RequestValidationError
from pydantic import Field

from retrainer.api.auth import WriteAccess
from retrainer.api.context import ContextDep
from retrainer.api.schemas import Body as StrictBody
from retrainer.api.schemas import Name
from retrainer.models.base import DataError
from retrainer.services import events, predictions
from retrainer.services.errors import InvalidEvent

router = APIRouter(tags=["producers"], dependencies=[WriteAccess])
PredictionId = Annotated[str, Path(max_length=64)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]

_EVENT = {"type": "object", "description": "type purchase | outcome | prediction | feedback, with its fields"}
EVENTS_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"oneOf": [_EVENT, {"type": "array", "items": _EVENT, "maxItems": events.MAX_BATCH}]},
    "example": [{"type": "purchase", "model": "ctr", "features": {"hook_strength": 0.7}, "value": 0.031},
                {"type": "outcome", "prediction_id": "p-1", "value": 0.027}]}}}}


def invalid(exc: InvalidEvent | str) -> RequestValidationError:
    """A service's InvalidEvent ("features.x: nan is not a finite number") as the API's 422, naming the
    body field it starts with."""
    text = str(exc).splitlines()[0]
    where, sep, problem = text.partition(": ")
    field = sep and " " not in where
    return RequestValidationError([{"type": "value_error", "loc": ("body", where) if field else ("body",),
                                    "msg": problem if field else text}])


@router.post("/events", status_code=status.HTTP_202_ACCEPTED, openapi_extra=EVENTS_BODY)
def post_events(ctx: ContextDep, body: Annotated[Any, Body()]) -> dict[str, Any]:
    """One event or an array of them, each sent as its own message to the events queue, as `retrainer event`
    sends it (a worker stores them in batches). 202 with how many were accepted, and per refused event its
    index and reason; a single event that is refused is a 422 (an unknown model 404)."""
    from retrainer.tasks.health import check_broker
    from retrainer.tasks.producer import admit, send_admitted

    if isinstance(body, dict):
        try:
            admit(body, ctx.settings)  # refused as a whole: the reason as the 422 (UnknownModel: 404)
        except InvalidEvent as exc:
            raise invalid(exc) from None
    elif not isinstance(body, list):
        raise invalid("an event object or an array of them expected")
    elif len(body) > events.MAX_BATCH:
        raise invalid(f"{len(body)} events; at most {events.MAX_BATCH} per request")
    check_broker(ctx.celery())  # 503 in seconds, before any message is sent
    out = send_admitted([body] if isinstance(body, dict) else body, ctx.settings, via=ctx.celery())
    return {"accepted": len(out.sent), "rejected": out.rejected,
            "events": [{"index": i, "event_id": sent.event_id, "task_id": sent.task_id} for i, sent in out.sent]}


class PredictBody(StrictBody):
    model: Name = Field(description="A configured model's name.")
    features: dict[str, Any] = Field(description="Name -> number, boolean or short string.")
    prediction_id: str | None = Field(None, description="Your id for it (default: a new one); outcomes name it.")
    segments: dict[str, Any] | None = Field(None, description="Short name -> text pairs accuracy is broken down by.")


@router.post("/predictions")
def predict(ctx: ContextDep, body: PredictBody) -> dict[str, Any]:
    """Predict with the model's production version as it is now (a promotion or a rollback serves the next
    call) and log the prediction (`retrainer predict`): its id, the version that served it, the value."""
    ctx.settings.model(body.model)
    try:
        with ctx.session() as session:
            try:
                predictions.check_features(body.features)  # named as the body's field, not as rows[0]
                record = predictions.predict(session, body.model, [body.features], segments=body.segments,
                                             prediction_ids=[body.prediction_id])[0]
            except InvalidEvent as exc:
                raise invalid(exc) from None
            except DataError as exc:  # the version cannot score these features (a column it needs is missing)
                raise invalid(f"features: {exc}") from None
            shown = predictions.served(record)
    except sqlalchemy.exc.IntegrityError:  # prediction_id is unique
        raise HTTPException(status.HTTP_409_CONFLICT, f"prediction {body.prediction_id!r} is already logged") from None
    return shown


class OutcomeBody(StrictBody):
    value: Finite = Field(description="What actually happened (a classifier's: the class).")
    targets: dict[str, Any] | None = Field(None, description="Second targets' outcomes, name -> number.")


@router.post("/predictions/{prediction_id}/outcome")
def outcome(ctx: ContextDep, prediction_id: PredictionId, body: OutcomeBody) -> dict[str, Any]:
    """Record the real outcome of a logged prediction (`retrainer outcome`); the same value again changes
    nothing. 404 for a prediction never logged."""
    with ctx.session() as session:
        try:
            record = predictions.record_outcome(session, prediction_id, body.value, targets=body.targets)
        except InvalidEvent as exc:
            raise invalid(exc) from None
        return predictions.outcome_shown(record)
