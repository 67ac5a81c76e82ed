"""The `retrainer` command line. `--json` output uses the shapes in services/reports.py (stable)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from retrainer.config import ConfigError, UnknownModel, get_settings

app = typer.Typer(help="Keeps production ML models accurate on its own.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
event_app = typer.Typer(help="Send producer events (purchase, outcome) or a JSON-lines file of them.")
app.add_typer(event_app, name="event")
console = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output (stable keys).")]


def emit(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def db() -> Iterator[Any]:
    from retrainer.db import session_scope

    with session_scope(get_settings().database_url) as session:
        yield session


def _celery(*args: str) -> None:
    """Replace this process with a Celery command on the `tasks` app (signals reach Celery directly)."""
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "tasks", *args])


# --- set-up and processes -----------------------------------------------------------------------

@app.command()
def init() -> None:
    """Create or upgrade the database schema (idempotent)."""
    from retrainer.db.migrate import current_revision, upgrade

    url = get_settings().database_url
    upgrade(url)
    typer.echo(f"schema at revision {current_revision(url)}")


@app.command()
def demo(keep: Annotated[bool, typer.Option(help="Keep var/demo afterwards for inspection.")] = True) -> None:
    """Run the whole loop on the embedded default (SQLite + filesystem broker, real worker and beat)."""
    from retrainer.demo import run

    raise typer.Exit(run(keep=keep))


@app.command()
def worker(
    queues: Annotated[str, typer.Option("--queues", "-Q")] = "training,events,checks,notifications",
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 2,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info",
) -> None:
    """Start a Celery worker (one per queue in production; training with concurrency 1-2)."""
    _celery("worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel)


@app.command()
def beat(
    schedule_file: Annotated[Path | None, typer.Option("--schedule-file")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info",
) -> None:
    """Start Celery beat (exactly one per deployment)."""
    path = schedule_file or get_settings().var_dir / "celerybeat-schedule"
    path.parent.mkdir(parents=True, exist_ok=True)
    _celery("beat", "-s", str(path), "-l", loglevel)


@app.command()
def flower(port: Annotated[int, typer.Option()] = 5555,
           no_auth: Annotated[bool, typer.Option("--no-auth", help="Allow no basic auth (local only).")] = False) -> None:
    """Start Flower; basic auth from FLOWER_BASIC_AUTH=user:password (required unless --no-auth)."""
    auth = os.environ.get("FLOWER_BASIC_AUTH")
    if not auth and not no_auth:
        raise typer.BadParameter("set FLOWER_BASIC_AUTH=user:password (or pass --no-auth for a local look)")
    _celery("flower", f"--port={port}", *([f"--basic-auth={auth}"] if auth else []))


# --- operations ---------------------------------------------------------------------------------

def _wait(result: Any, what: str, timeout: float) -> dict[str, Any]:
    with console.status(f"{what} (task {result.id}) …"):
        return result.get(timeout=timeout)


@app.command()
def check(model: str, local: Annotated[bool, typer.Option(help="Compute here; enqueue nothing.")] = False,
          timeout: float = 300, as_json: JsonOpt = False) -> None:
    """Run the accuracy check now (through a worker unless --local)."""
    settings = get_settings()
    cfg = settings.model(model)
    if local:
        from services import accuracy

        with db() as session:
            result = accuracy.check(session, model, cfg.accuracy)
    else:
        from tasks.app import app as celery_app

        sent = celery_app.send_task("checks.check_accuracy", kwargs={"model": model}, queue="checks")
        result = _wait(sent, f"checking {model}", timeout)
    emit(result) if as_json else typer.echo(f"{result['status']}: {result['message']}")


@app.command()
def retrain(model: str, local: Annotated[bool, typer.Option(help="Run the pipeline in this process.")] = False,
            wait: bool = True, timeout: float = 3600, as_json: JsonOpt = False) -> None:
    """Retrain now (manual trigger) through a worker, or --local in this process."""
    settings = get_settings()
    settings.model(model)
    if local:
        from services import retrain as pipeline

        with db() as session, console.status(f"retraining {model} …"):
            result = pipeline.retrain(session, settings, model, "manual")
    else:
        from tasks.producer import send_retrain

        sent = send_retrain(model, "manual", settings=settings)
        if not wait:
            typer.echo(f"enqueued task {sent.id}")
            return
        result = _wait(sent, f"retraining {model}", timeout)
    if as_json:
        emit(result)
    else:
        typer.echo(f"{result['status']}: {result.get('reason') or result.get('message', '')}")
    if result["status"] == "error":
        raise typer.Exit(1)


@app.command()
def promote(version_id: str, expect: Annotated[str | None, typer.Option(help="Only if this version is production now.")] = None) -> None:
    """Make VERSION_ID production (compare-and-swap against --expect or the current one)."""
    from services import registry

    with db() as session:
        version = registry.promote(session, version_id, expect, actor="cli")
    typer.echo(json.dumps({"status": "success", "message": f"Model {version.version_id} promoted to production",
                           "version_id": version.version_id}))


@app.command()
def rollback(model: str) -> None:
    """Return MODEL to the version the current production replaced."""
    from services import registry

    with db() as session:
        version = registry.rollback(session, model, actor="cli")
    typer.echo(json.dumps({"status": "success", "message": f"{model} rolled back to {version.version_id}",
                           "version_id": version.version_id}))


# --- reports ------------------------------------------------------------------------------------

@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Production version, live accuracy and last run of every configured model."""
    from services import reports

    with db() as session:
        data = reports.status(session, get_settings())
    if as_json:
        return emit(data)
    table = Table("model", "production", "live MAE (n)", "threshold", "last run", "pending")
    for name, m in data["models"].items():
        live, last = m["live_accuracy"], m["last_run"]
        mae = "–" if live["mae"] is None else f"{live['mae']:.4f} ({live['count']})"
        table.add_row(name, (m["production"] or {}).get("version_id", "–"), mae, str(live["mae_threshold"]),
                      f"{last['outcome']} {last['started_at'][:19]}" if last else "–", str(m["pending_requests"]))
    Console().print(table)


@app.command()
def history(model: str, limit: int = 20, as_json: JsonOpt = False) -> None:
    """Recent training runs of MODEL."""
    from services import reports

    with db() as session:
        data = reports.history(session, model, limit)
    if as_json:
        return emit(data)
    table = Table("run", "trigger", "outcome", "version", "mae", "old mae", "improvement", "reason")
    for r in data["training_runs"]:
        m, o = r["metrics"] or {}, r["old_metrics"] or {}
        table.add_row(r["run_id"], r["trigger"], r["outcome"] or r["status"], r["model_version_id"] or "–",
                      reports.fmt(m.get("mae")), reports.fmt(o.get("mae")), reports.fmt_pct(r["improvement_percentage"]),
                      r["promotion_reason"] or r["error_message"] or "")
    Console(width=200).print(table)


@app.command()
def versions(model: str, limit: int = 50, as_json: JsonOpt = False) -> None:
    """Versions of MODEL, newest first."""
    from services import reports

    with db() as session:
        data = reports.versions(session, model, limit)
    if as_json:
        return emit(data)
    table = Table("version", "status", "production", "trained at", "samples", "mae", "sha256")
    for v in data["versions"]:
        table.add_row(v["version_id"], v["status"], "yes" if v["is_production"] else "", v["trained_at"][:19],
                      str(v["num_training_samples"]), reports.fmt(v["metrics"].get("mae")), v["artifact_sha256"][:12])
    Console().print(table)


# --- scripting: predictions, outcomes, events ---------------------------------------------------

def _features(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("expected a JSON object of name -> value")
    return value


@app.command()
def predict(model: str, features: Annotated[str, typer.Option(help='JSON object, e.g. {"hook_strength": 0.7}')],
            hook_type: str | None = None, template_id: str | None = None) -> None:
    """Predict with the production version and log the prediction."""
    from services import predictions

    with db() as session:
        record = predictions.predict(session, model, [_features(features)], hook_type=hook_type,
                                     template_id=template_id)[0]
    emit({"prediction_id": record.prediction_id, "model": model, "version_id": record.version_id,
          "predicted": record.predicted})


@app.command()
def outcome(prediction_id: str, value: float) -> None:
    """Record the real outcome of a logged prediction."""
    from services import predictions

    with db() as session:
        record = predictions.record_outcome(session, prediction_id, value)
    emit({"prediction_id": record.prediction_id, "actual": record.actual, "error": record.error,
          "status": record.status.value})


@event_app.callback(invoke_without_command=True)
def event(ctx: typer.Context, file: Annotated[Path | None, typer.Option("--file", help="JSON lines, one event each.")] = None) -> None:
    """With --file: the batch path (many events per round trip, one retrain per model per window)."""
    if ctx.invoked_subcommand is not None:
        return
    if file is None:
        raise typer.BadParameter("give a subcommand (purchase, outcome) or --file events.jsonl")
    from tasks.producer import publish_events

    def lines() -> Iterator[Any]:
        with file.open() as fh:
            for line in fh:
                if line.strip():
                    yield _json_or_text(line)

    with console.status(f"publishing {file} …"):
        result = publish_events(lines())
    emit(result.as_dict())
    if result.rejected:
        raise typer.Exit(1)


def _json_or_text(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return line  # the event parser reports it as invalid JSON, with its index


@event_app.command("purchase")
def event_purchase(model: str, features: Annotated[str, typer.Option()], value: Annotated[float, typer.Option()],
                   event_id: str | None = None) -> None:
    """Send one purchase event (features + observed value) through the events queue."""
    _send({"type": "purchase", "model": model, "features": _features(features), "value": value, "event_id": event_id})


@event_app.command("outcome")
def event_outcome(prediction_id: str, value: float, event_id: str | None = None) -> None:
    """Send one outcome event for a logged prediction through the events queue."""
    _send({"type": "outcome", "prediction_id": prediction_id, "value": value, "event_id": event_id})


def _send(payload: dict[str, Any]) -> None:
    from services.events import parse
    from tasks.producer import send_event

    parse({k: v for k, v in payload.items() if v is not None})  # refuse bad input here, not in a worker
    sent = send_event({k: v for k, v in payload.items() if v is not None})
    emit({"status": "enqueued", "task_id": sent.id})


def main() -> None:
    """Entry point: known errors print one line naming the problem (exit 1; 2 for configuration)."""
    from models.base import ArtifactError
    from services.errors import InvalidEvent, NotFound, PromotionConflict

    try:
        get_settings()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]", markup=True, highlight=False)
        sys.exit(2)
    known: tuple[type[BaseException], ...] = (UnknownModel, NotFound, PromotionConflict, ArtifactError,
                                              InvalidEvent, LookupError, ValueError, TimeoutError)
    try:
        app()
    except known as exc:
        console.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(1)



if __name__ == "__main__":
    main()
