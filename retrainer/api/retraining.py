"""Retraining work: ask for a retrain (POST /models/retrain), follow and cancel requests (/requests),
and every model's state (/retraining/status)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, status

from retrainer.api.auth import ReadAccess, WriteAccess
from retrainer.api.context import ContextDep
from retrainer.api.params import Limit, OptionalModel
from retrainer.api.schemas import CancelBody, RequestStatus, RetrainAccepted, RetrainBody
from retrainer.db.records import Priority
from retrainer.db.records import RequestStatus as Status
from retrainer.services import reports, retrain_requests

router = APIRouter(tags=["retraining"], dependencies=[ReadAccess])


@router.post("/models/retrain", status_code=status.HTTP_202_ACCEPTED, dependencies=[WriteAccess])
def retrain(ctx: ContextDep, body: RetrainBody) -> RetrainAccepted:
    """Ask for a retrain now and return at once with the request id, as `retrainer request` does: the
    model's pending request is opened (or taken over), committed, then sent to the training queue."""
    from retrainer.tasks.enqueue import ask_retrain
    from retrainer.tasks.health import check_broker

    ctx.settings.model(body.model)
    check_broker(ctx.celery())  # 503 in seconds, before a request is written that nothing would send
    shown, sent = ask_retrain(body.model, body.requested_by, body.reason, Priority(body.priority),
                              settings=ctx.settings, via=ctx.celery())
    return RetrainAccepted(**shown, request_id=shown["id"], task_id=sent.id,
                           message=f"retrain of {body.model} requested (request {shown['id']}, "
                                   f"{shown['priority']} priority)",
                           note=f"follow it at /requests?model={body.model} and /models/training-history?model={body.model}")


@router.get("/requests")
def requests(ctx: ContextDep, model: OptionalModel = None,
             status_: Annotated[RequestStatus | None, Query(alias="status")] = None,
             limit: Limit = 50) -> dict[str, Any]:
    """Retrain requests, newest first: who asked, why, priority, status and the run each led to."""
    with ctx.session() as session:
        rows = retrain_requests.listing(session, model, Status(status_) if status_ else None, limit)
    return {"requests": rows, "count": len(rows)}


@router.post("/requests/{request_id}/cancel", dependencies=[WriteAccess])
def cancel(ctx: ContextDep, request_id: Annotated[int, Path(ge=1)],
           body: Annotated[CancelBody | None, Body()] = None) -> dict[str, Any]:
    """Cancel a pending request; 409 for one a run is processing or one already ended."""
    with ctx.session() as session:
        return retrain_requests.cancel(session, request_id, (body or CancelBody()).by)


@router.get("/retraining/status")
def retraining_status(ctx: ContextDep, model: Annotated[list[str] | None, Query(max_length=100)] = None) -> dict[str, Any]:
    """Every configured model (or each `model` given): production version, live accuracy against its
    threshold, last run, pending requests, pause state, budget, latest checks, drift (`retrainer status --json`)."""
    settings = ctx.settings
    if model:
        settings = settings.model_copy(update={"models": {name: settings.model(name) for name in model}})
    with ctx.session() as session:
        return reports.status(session, settings)
