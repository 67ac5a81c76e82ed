"""/models: production versions, versions, training history, the ledger, comparison (reads) and
promotion and rollback (writes). Each endpoint is one call of the service the CLI command calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, status

from retrainer.api.auth import ReadAccess, WriteAccess
from retrainer.api.context import ContextDep
from retrainer.api.params import Limit, ModelName
from retrainer.api.schemas import ProductionChange, PromoteBody, RollbackBody
from retrainer.services import registry, reports

router = APIRouter(prefix="/models", tags=["models"], dependencies=[ReadAccess])
VersionId = Annotated[str, Path(max_length=200)]


@router.get("/production")
def production(ctx: ContextDep, model: Annotated[str | None, Query(max_length=100)] = None) -> dict[str, Any]:
    """Each configured model's production version (null: none yet), keyed by model name."""
    names = [model] if model is not None else list(ctx.settings.models)
    for name in names:
        ctx.settings.model(name)
    with ctx.session() as session:
        return {name: reports.version_dict(v) if (v := registry.production(session, name)) else None for name in names}


@router.get("/versions")
def versions(ctx: ContextDep, model: ModelName, limit: Limit = 50) -> dict[str, Any]:
    """Versions of a model, newest first (`retrainer versions MODEL --json`)."""
    with ctx.session() as session:
        return reports.versions(session, model, limit)


@router.get("/training-history")
def training_history(ctx: ContextDep, model: ModelName, limit: Limit = 20) -> dict[str, Any]:
    """Recent training runs of a model with their metrics and decisions (`retrainer history MODEL --json`)."""
    with ctx.session() as session:
        return reports.history(session, model, limit)


@router.get("/ledger")
def ledger(ctx: ContextDep, model: ModelName, limit: Limit = 50) -> dict[str, Any]:
    """The model's production pointer over time: every promotion and rollback, by whom, why (`retrainer ledger`)."""
    with ctx.session() as session:
        return reports.ledger_history(session, model, limit)


@router.get("/compare/{version_a}/{version_b}")
def compare(ctx: ContextDep, version_a: VersionId, version_b: VersionId) -> dict[str, Any]:
    """Two versions scored on the same holdout rows, metric by metric, with the paired test; 409 when they
    were only ever scored on different holdouts (`retrainer compare A B --json`)."""
    with ctx.session() as session:
        return reports.compare(session, version_a, version_b)


@router.post("/promote/{version_id}", dependencies=[WriteAccess])
def promote(ctx: ContextDep, version_id: VersionId, body: Annotated[PromoteBody | None, Body()] = None) -> ProductionChange:
    """Make a version production: a compare-and-swap against `expected` (409 when production is no longer
    that version), recorded in the promotion ledger (`retrainer promote VERSION --expect ...`)."""
    body = body or PromoteBody()
    with ctx.session() as session:
        try:
            version = registry.promote(session, version_id, body.expected, actor=body.by, reason=body.reason)
        except ValueError as exc:  # failed training, or archived without its artifact: nothing to promote
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        shown = reports.version_dict(version)
    return ProductionChange(message=f"Model {version_id} promoted to production", version_id=version_id,
                            model=shown["model_type"], version=shown)


@router.post("/rollback/{model}", dependencies=[WriteAccess])
def rollback(ctx: ContextDep, model: Annotated[str, Path(max_length=100)],
             body: Annotated[RollbackBody | None, Body()] = None) -> ProductionChange:
    """Return a model to the version its production replaced, or `to` an earlier production version whose
    artifact still verifies (`retrainer rollback MODEL --to ...`)."""
    body = body or RollbackBody()
    ctx.settings.model(model)
    with ctx.session() as session:
        if body.to is not None:
            registry.get(session, body.to)  # an unknown version is a 404, not a refused rollback
        try:
            version = registry.rollback(session, model, actor=body.by, to=body.to, reason=body.reason)
        except LookupError as exc:
            if type(exc) is not LookupError:  # NotFound, RollbackRefused ...: their own handlers answer
                raise
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None  # production replaced nothing
        shown = reports.version_dict(version)
    return ProductionChange(message=f"{model} rolled back to {version.version_id}", version_id=version.version_id,
                            model=model, version=shown)
