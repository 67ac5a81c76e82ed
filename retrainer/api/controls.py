"""Steering the loop at runtime (seed 004's start/stop/force) and the checks that start it: stop and
start automatic retrains (`retrainer pause` / `resume`), force a person's retrain, run a trigger's check
now (POST /api/ml/check-retrain), and the stored drift reports (`retrainer drift-report`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from pydantic import Field

from retrainer.api.auth import ReadAccess, WriteAccess
from retrainer.api.context import Context, ContextDep
from retrainer.api.params import Limit, OptionalModel, model_name
from retrainer.api.schemas import Body as StrictBody
from retrainer.api.schemas import Name, Reason, RetrainAccepted, RetrainBody
from retrainer.services import controls, drift_check, triggers

router = APIRouter(tags=["controls"], dependencies=[ReadAccess])
ModelQuery = Annotated[str | None, Query(max_length=100, description="Or `model` in the body.")]
CheckName = Literal[tuple(triggers.CHECKS)]  # type: ignore[valid-type]  # `retrainer check --trigger NAME`


class PauseBody(StrictBody):
    model: Name | None = Field(None, description="A configured model; absent: every configured model.")
    reason: Reason | None = Field(None, description="Why: kept on the control and in the audit log.")
    by: Name = Field("api", description="Who: kept on the control and in the audit log.")


def _set_paused(ctx: Context, body: PauseBody | None, paused: bool) -> dict[str, Any]:
    body = body or PauseBody()
    names = [body.model] if body.model is not None else list(ctx.settings.models)
    for name in names:
        ctx.settings.model(name)
    with ctx.session() as session:
        states = {name: controls.set_paused(session, name, paused, body.by, body.reason) for name in names}
    word = "stopped: scheduled and event triggers are recorded as suppressed" if paused else "started"
    return {"status": "paused" if paused else "active", "message": f"automatic retrains of {', '.join(names)} {word}",
            "models": states}


@router.post("/retraining/stop", dependencies=[WriteAccess])
def stop(ctx: ContextDep, body: Annotated[PauseBody | None, Body()] = None) -> dict[str, Any]:
    """Pause automatic retrains of a model, or of every model (`retrainer pause`): at once on every worker
    and beat, no restart; its waiting automatic requests are cancelled; a person's request still runs.
    `models` holds each one's state as `retrainer pause --json` shows it."""
    return _set_paused(ctx, body, True)


@router.post("/retraining/start", dependencies=[WriteAccess])
def start(ctx: ContextDep, body: Annotated[PauseBody | None, Body()] = None) -> dict[str, Any]:
    """Let a model's triggers (or every model's) start retrains again (`retrainer resume`)."""
    return _set_paused(ctx, body, False)


class ForceBody(StrictBody):
    model: Name | None = Field(None, description="A configured model; may be left out when only one is.")
    reason: Reason | None = Field(None, description="Why: kept on the request and shown in its decision.")
    by: Name = Field("api", description="Who asks: kept on the request and in the audit log.")


@router.post("/retraining/force", status_code=202, dependencies=[WriteAccess])
def force(ctx: ContextDep, model: ModelQuery = None, body: Annotated[ForceBody | None, Body()] = None) -> RetrainAccepted:
    """Retrain now: a person's high-priority request, run even while the model is paused or past its budget;
    returns at once as POST /models/retrain does."""
    from retrainer.api.retraining import retrain

    body = body or ForceBody()
    name = model_name(ctx, body.model or model)
    return retrain(ctx, RetrainBody(model=name, reason=body.reason, priority="high", requested_by=body.by))


class CheckBody(StrictBody):
    model: Name | None = Field(None, description="A configured model; may be left out when only one is.")
    trigger: CheckName | None = Field(None, description="Which check (default accuracy), or `trigger` in the query.")
    by: Name = Field("api", description="Who asks: kept on the request the check opens.")


@router.post("/api/ml/check-retrain", dependencies=[WriteAccess])
def check_retrain(ctx: ContextDep, model: ModelQuery = None, trigger: CheckName = "accuracy",
                  body: Annotated[CheckBody | None, Body()] = None) -> dict[str, Any]:
    """Run a trigger's check now, here (`retrainer check MODEL --local`), and when it says retrain_needed,
    open the model's request and send it to the training queue as beat's check does (`retrain_enqueued`;
    `suppressed` says why a paused model or a spent budget asked for none)."""
    from retrainer.tasks.checks import check_and_ask
    from retrainer.tasks.health import check_broker

    body = body or CheckBody()
    name = model_name(ctx, body.model or model)
    check_broker(ctx.celery())  # 503 in seconds, before a request is written that nothing would send
    return check_and_ask(name, body.trigger or trigger, body.by, ctx.settings, via=ctx.celery())


@router.get("/drift/reports")
def drift_reports(ctx: ContextDep, model: OptionalModel = None, limit: Limit = 20) -> dict[str, Any]:
    """Stored drift reports, newest first, of one model or of all: per feature the method, statistic,
    threshold and verdict (`retrainer drift-report --json` for each)."""
    with ctx.session() as session:
        reports = [drift_check.report_dict(r) for r in drift_check.recent(session, model, limit)]
    return {"reports": reports, "count": len(reports)}


@router.get("/drift/reports/{report_id}")
def drift_report(ctx: ContextDep, report_id: Annotated[int, Path(ge=1)]) -> dict[str, Any]:
    """One stored drift report (`retrainer drift-report ID --json`)."""
    with ctx.session() as session:
        return drift_check.report_dict(drift_check.get(session, report_id))
