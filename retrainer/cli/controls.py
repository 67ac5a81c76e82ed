"""Commands that steer the loop at runtime: requests, their priority and cancellation, pause and resume."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer

from retrainer.cli import JsonOpt, _broker_answers, _fail, _worker_problem, app, db, emit
from retrainer.config import get_settings

PriorityOpt = Annotated[str, typer.Option(help="low | normal | high: a high request runs before normal work waiting "
                                               "in the training queue (Redis broker).")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why: kept on the request and shown in its decision.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who asks (default: the login name).")]
PRIORITIES = ("low", "normal", "high")


def who(by: str | None) -> str:
    if by:
        return by[:100]
    try:
        return getpass.getuser()[:100]
    except (OSError, KeyError):  # no login name in this environment (a container without /etc/passwd entry)
        return "cli"


def priority_of(value: str) -> Any:
    from retrainer.db.records import Priority

    if value not in PRIORITIES:
        _fail(f"--priority {value!r}: use one of {', '.join(PRIORITIES)}", 2)
    return Priority(value)


def ask(model: str, reason: str | None, priority: str, by: str | None) -> tuple[dict[str, Any], Any]:
    """Open (or take over) MODEL's request for a person, then put it on the training queue. Returns the
    request as `requests --json` shows it, and the Celery result of its message."""
    from retrainer.tasks.enqueue import ask_retrain

    settings = get_settings()
    settings.model(model)
    level = priority_of(priority)
    _broker_answers()
    return ask_retrain(model, who(by), reason, level, settings=settings)


@app.command()
def request(model: str, reason: ReasonOpt = None, priority: PriorityOpt = "normal", by: ByOpt = None,
            as_json: JsonOpt = False) -> None:
    """Ask for a retrain of MODEL now and return at once with the request id (`retrainer requests` follows it).

    A person's request runs even while the model is paused or past its budget."""
    shown, _ = ask(model, reason, priority, by)
    problem = _worker_problem("training")
    if as_json:
        emit(shown | {"warning": problem})
    else:
        typer.echo(f"request {shown['id']} for {model}: {shown['status']} ({shown['priority']} priority)")
    if problem:
        print(f"warning: {problem}; the request waits in the queue until one does", file=sys.stderr)


@app.command()
def requests(model: Annotated[str | None, typer.Argument(help="Only this model's.")] = None,
             status: Annotated[str | None, typer.Option(help="pending | processing | completed | failed | cancelled")] = None,
             limit: int = 50, as_json: JsonOpt = False) -> None:
    """Retrain requests, newest first: who asked, why, priority, status and the run it led to."""
    from rich.console import Console
    from rich.table import Table

    from retrainer.db.records import RequestStatus
    from retrainer.services import retrain_requests

    if model is not None:
        get_settings().model(model)
    if status is not None and status not in {s.value for s in RequestStatus}:
        _fail(f"--status {status!r}: use one of {', '.join(s.value for s in RequestStatus)}", 2)
    with db() as session:
        rows = retrain_requests.listing(session, model, RequestStatus(status) if status else None, limit)
    if as_json:
        return emit({"requests": rows})
    table = Table("id", "model", "trigger", "by", "priority", "status", "created", "run", "reason")
    for r in rows:
        run = f"{r['run_id']} ({r['run_outcome']})" if r["run_id"] and r["run_outcome"] else (r["run_id"] or "–")
        table.add_row(str(r["id"]), r["model"], r["trigger"] + (" fine-tune" if r["fine_tune"] else ""),
                      r["requested_by"], r["priority"], r["status"], (r["created_at"] or "")[5:16].replace("T", " "), run,
                      r["error_message"] if r["status"] in ("failed", "cancelled") else (r["reason"] or ""))
    Console().print(table)


@app.command()
def cancel(request_id: int, by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a pending retrain request (one a run is processing, or an ended one, cannot be)."""
    from retrainer.services import retrain_requests

    with db() as session:
        shown = retrain_requests.cancel(session, request_id, who(by))
    emit(shown) if as_json else typer.echo(f"request {request_id} cancelled")


def _set_paused(model: str, paused: bool, reason: str | None, by: str | None, as_json: bool) -> None:
    from retrainer.services import controls

    get_settings().model(model)
    with db() as session:
        state = controls.set_paused(session, model, paused, who(by), reason)
    if as_json:
        return emit(state)
    word = "paused: scheduled and event triggers are recorded as suppressed" if paused else "active"
    cancelled = state["cancelled_requests"]
    typer.echo(f"{model} {word}" + (f"; cancelled waiting request(s) {', '.join(map(str, cancelled))}" if cancelled else ""))


@app.command()
def pause(model: str, reason: ReasonOpt = None, by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Stop automatic retrains of MODEL (no restart needed; a person's request still runs)."""
    _set_paused(model, True, reason, by, as_json)


@app.command()
def resume(model: str, reason: ReasonOpt = None, by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Let MODEL's triggers start retrains again."""
    _set_paused(model, False, reason, by, as_json)
