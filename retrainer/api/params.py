"""Query parameters shared by the routers: which model, how many rows."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from fastapi.exceptions import RequestValidationError

from retrainer.api.context import ContextDep

Limit = Annotated[int, Query(ge=1, le=1000, description="Newest rows returned.")]


def model_name(ctx: ContextDep, model: Annotated[str | None, Query(
        max_length=100, description="A configured model; may be left out when only one is configured.")] = None) -> str:
    """The `model` query parameter, a configured model (404 otherwise); optional with a single model."""
    if model is None:
        if len(ctx.settings.models) == 1:
            return next(iter(ctx.settings.models))
        raise RequestValidationError([{"type": "missing", "loc": ("query", "model"),
                                       "msg": f"Field required: configured models are {', '.join(ctx.settings.models)}"}])
    ctx.settings.model(model)  # UnknownModel: 404 naming the configured ones
    return model


def optional_model(ctx: ContextDep, model: Annotated[str | None, Query(
        max_length=100, description="Only this model's.")] = None) -> str | None:
    if model is not None:
        ctx.settings.model(model)
    return model


ModelName = Annotated[str, Depends(model_name)]
OptionalModel = Annotated[str | None, Depends(optional_model)]
