"""The `retrainer` command line. `--json` output uses the shapes in services/reports.py (stable).

Start-up is kept light: `retrainer --help` imports typer, rich and the settings, nothing more, and
each command imports only what it uses (SQLAlchemy, Celery, pandas, a model family's library)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from retrainer.config import ConfigError, get_settings, mask_url, unknown_env_warnings

app = typer.Typer(help="Keeps production ML models accurate on its own.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
event_app = typer.Typer(help="Send producer events (purchase, outcome) or a JSON-lines file of them.")
app.add_typer(event_app, name="event")
console = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output (stable keys).")]
INSUFFICIENT_DATA = 3  # the exit code of `retrain` and `check` when there is too little data to decide


@app.callback()
def _validate_settings(ctx: typer.Context) -> None:
    # Every command but `demo` reads the configuration first, so a bad value stops it with exit 2 before
    # anything starts (a worker's Celery would print a traceback). The demo never reads it: it runs on
    # its own embedded settings whatever this environment or a retrainer.yaml here says; `replay` reads
    # only the file its --config names (retrainer/replay/environment.py).
    if ctx.invoked_subcommand not in ("demo", "replay"):
        settings = get_settings()
        if ctx.invoked_subcommand in _USES_MODELS:
            _check_models(settings)


# Commands that train, serve or schedule a model check every model's hyper-parameters and metrics
# first (as a worker does at start-up), so `retrainer retrain` names a bad key instead of the first
# fit failing on it; the others skip it and never import pandas.
_USES_MODELS = {"worker", "beat", "retrain", "check", "predict"}


def _check_models(settings: Any) -> None:
    from retrainer.models.base import check_models

    if problems := check_models(settings.models):
        raise ConfigError("invalid configuration: " + "; ".join(problems))


def emit(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def db() -> Iterator[Any]:
    from retrainer.db import session_scope

    with session_scope(get_settings().database_url) as session:
        yield session


def _celery(*args: str) -> None:
    """Replace this process with a Celery command on the `tasks` app (signals reach Celery directly)."""
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "retrainer.tasks", *args])


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
    from retrainer.demo.loop import run

    raise typer.Exit(run(keep=keep))


def default_worker_name(queues: str) -> str:
    """`training@%h`, `events-checks-notifications@%h`: two workers of one host get two names (Flower
    lists workers by name, and two `celery@host` show as one)."""
    return "-".join(q.strip() for q in queues.split(",") if q.strip()) + "@%h"


@app.command(context_settings={"allow_extra_args": True})
def worker(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option("--queues", "-Q")] = "training,events,checks,notifications",
    concurrency: Annotated[int, typer.Option("--concurrency", "-c")] = 2,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info",
    hostname: Annotated[str | None, typer.Option(
        "--hostname", "-n", help="Node name (%h: this host). Default: the queues joined by '-', @%h.")] = None,
) -> None:
    """Start a Celery worker (one per queue in production; training with concurrency 1-2).

    A worker for the events queue and not training holds 1,000 messages (prefetch) so it stores events
    in batches of 500; training keeps 1. Celery's own worker options go after `--`:
    retrainer worker -Q training -- --max-tasks-per-child 10
    """
    _celery("worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel, "-n", hostname or default_worker_name(queues),
            *ctx.args)


@app.command()
def beat(
    schedule_file: Annotated[Path | None, typer.Option("--schedule-file")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info",
) -> None:
    """Start Celery beat. On a Redis broker run two or more: one schedules, the others stand by (tasks/beat_lock.py);
    on the embedded broker exactly one, with its schedule in --schedule-file."""
    path = schedule_file or get_settings().var_dir / "celerybeat-schedule"
    path.parent.mkdir(parents=True, exist_ok=True)
    _celery("beat", "-s", str(path), "-l", loglevel)


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@app.command()
def flower(port: Annotated[int, typer.Option()] = 5555,
           address: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 only inside a container.")] = "127.0.0.1",
           no_auth: Annotated[bool, typer.Option("--no-auth", help="No basic auth (loopback only).")] = False) -> None:
    """Start Flower; basic auth from FLOWER_BASIC_AUTH=user:password[,user:password] (required unless --no-auth)."""
    # Flower 2.x reads FLOWER_BASIC_AUTH from the environment itself (flower/command.py apply_env_options):
    # the credentials never go on the command line, where `ps` shows them to every user.
    auth = os.environ.get("FLOWER_BASIC_AUTH")
    if auth is not None and not _valid_basic_auth(auth):
        raise ConfigError("FLOWER_BASIC_AUTH must be user:password[,user:password] with non-empty users and "
                          "passwords (no commas in a password)")
    if not auth and not no_auth:
        raise ConfigError("set FLOWER_BASIC_AUTH=user:password (or pass --no-auth for a look on 127.0.0.1)")
    if not auth and address not in _LOOPBACK:
        raise ConfigError(f"--no-auth only on a loopback address, not {address}: set FLOWER_BASIC_AUTH")
    _celery("flower", f"--port={port}", f"--address={address}")


def _valid_basic_auth(value: str) -> bool:
    pairs = [pair.partition(":") for pair in value.split(",")]  # Flower splits on commas, compares user:password
    return all(user and sep and password for user, sep, password in pairs)


# --- operations ---------------------------------------------------------------------------------

def _broker_answers() -> None:
    """Fail in seconds with one line when the broker is down, instead of waiting on kombu's retries."""
    from retrainer.tasks.app import app as celery_app
    from retrainer.tasks.health import check_broker

    check_broker(celery_app)


def _worker_problem(queue: str) -> str | None:
    """Why nothing would take a task sent to `queue` now (no worker consumes it), or None. Where the
    broker cannot tell, says so on stderr and returns None: the caller then waits, visibly."""
    from retrainer.tasks.enqueue import workers_on

    url = mask_url(get_settings().broker_url)
    try:
        seen = workers_on(queue)
    except Exception as exc:  # noqa: BLE001  a probe that fails must not stop the command: wait instead
        seen, why = None, f"{type(exc).__name__}: {exc}"
    else:
        why = "its transport has no fanout exchange, so its workers run no remote control"
    if seen is None:
        print(f"note: cannot see the workers at {url} ({why}); waiting for one on the {queue!r} queue", file=sys.stderr)
        return None
    if any(queue in queues for queues in seen.values()):
        return None
    up = "; ".join(f"{name} on {','.join(queues)}" for name, queues in seen.items())
    return (f"no worker consumes the {queue!r} queue at {url}" + (f" (up: {up})" if up else "")
            + f"; start one: retrainer worker -Q {queue}")


def _wait(result: Any, what: str, timeout: float) -> dict[str, Any]:
    """The task's result. A failed retrain re-raises RetrainFailed, for the caller to report; any other
    task that failed, or did not finish in `timeout` seconds, is a one-line error."""
    from celery.exceptions import TimeoutError as ResultTimeout

    from retrainer.tasks.enqueue import RetrainFailed

    with console.status(f"{what} (task {result.id}) …"):
        try:
            return result.get(timeout=timeout)
        except ResultTimeout:
            _fail(f"{what}: no result after {timeout:.0f} s (task {result.id} may still be queued or running)", 1)
        except RetrainFailed:
            raise  # the caller reports it with the retrain's result
        except Exception as exc:  # the task raised on the worker: name it, without a traceback
            if not result.failed():
                raise
            _fail(f"{what}: task {result.id} failed on the worker: {type(exc).__name__}: {exc}", 1)


CHECK_NAMES = ("accuracy", "accept_rate", "errors", "new_data", "drift", "probation")  # services/triggers.py CHECKS


@app.command()
def check(model: str, local: Annotated[bool, typer.Option(help="Compute here; enqueue nothing.")] = False,
          trigger: Annotated[str, typer.Option(help=f"Which check: {', '.join(CHECK_NAMES)}.")] = "accuracy",
          timeout: Annotated[float, typer.Option(help="Seconds to wait for the worker's result.")] = 300,
          as_json: JsonOpt = False) -> None:
    """Run a trigger's check now (through a worker unless --local): accuracy by default, or
    --trigger accept_rate | errors | new_data | drift | probation. Exit 3: insufficient data."""
    if trigger not in CHECK_NAMES:
        _fail(f"--trigger {trigger!r}: use one of {', '.join(CHECK_NAMES)}", 2)
    settings = get_settings()
    cfg = settings.model(model)
    if local:
        from retrainer.services import triggers

        with db() as session:
            result = triggers.CHECKS[trigger].decide(session, model, cfg)
    else:
        from retrainer.tasks.app import app as celery_app
        from retrainer.tasks.checks import TASKS

        _broker_answers()
        if problem := _worker_problem("checks"):
            _fail(problem, 1)
        sent = celery_app.send_task(TASKS[trigger], kwargs={"model": model}, queue="checks")
        result = _wait(sent, f"checking {model} ({trigger})", timeout)
    emit(result) if as_json else typer.echo(f"{result['status']}: {result['message']}")
    if result["status"] == "insufficient_data":
        raise typer.Exit(INSUFFICIENT_DATA)


@app.command()
def retrain(model: str, local: Annotated[bool, typer.Option(help="Run the pipeline in this process.")] = False,
            wait: Annotated[bool, typer.Option(help="Wait for the worker's result.")] = True,
            timeout: Annotated[float, typer.Option(help="Seconds to wait for the worker's result.")] = 3600,
            reason: Annotated[str | None, typer.Option(help="Why: kept on the request.")] = None,
            priority: Annotated[str, typer.Option(help="low | normal | high (see `retrainer request`).")] = "normal",
            by: Annotated[str | None, typer.Option("--by", help="Who asks (default: the login name).")] = None,
            as_json: JsonOpt = False) -> None:
    """Retrain now (manual trigger) through a worker and wait for its decision, or --local in this process.

    Exit 1: the retrain ended in error (or no worker consumes the training queue); 3: insufficient data."""
    from retrainer.cli.controls import ask, priority_of, who

    settings = get_settings()
    settings.model(model)
    priority_of(priority)  # a typo stops here, before anything is queued
    if local:
        from retrainer.services import retrain as pipeline
        from retrainer.services import retrain_requests

        with db() as session:
            request_id = retrain_requests.ask(session, model, who(by), reason, priority_of(priority)).id
        with db() as session, console.status(f"retraining {model} …"):
            result = pipeline.retrain(session, settings, model, "manual", request_id)
    else:
        from retrainer.tasks.enqueue import RetrainFailed

        _broker_answers()
        problem = _worker_problem("training")
        if problem and wait:
            _fail(problem, 1)
        _, sent = ask(model, reason, priority, by)
        if not wait:
            if problem:
                print(f"warning: {problem}; the retrain waits in the queue until one does", file=sys.stderr)
            typer.echo(f"enqueued task {sent.id}")
            return
        try:
            result = _wait(sent, f"retraining {model}", timeout)
        except RetrainFailed as exc:  # the worker's task failed; its result says why
            result = exc.result
    if as_json:
        emit(result)
    if result["status"] == "error":  # one line, as every problem; --json printed the result above
        run = f" (run {result['run_id']})" if result.get("run_id") else ""
        _fail(f"retrain of {model!r} failed{run}: {result['message']}", 1)
    if not as_json:
        typer.echo(f"{result['status']}: {result.get('reason') or result.get('message', '')}")
    if result["status"] in ("insufficient_data", "no_new_data"):  # nothing was decided: exit 3
        raise typer.Exit(INSUFFICIENT_DATA)


@app.command()
def promote(version_id: str, expect: Annotated[str | None, typer.Option(help="Only if this version is production now.")] = None,
            reason: Annotated[str, typer.Option(help="Why: kept in the promotion ledger.")] = "",
            by: Annotated[str | None, typer.Option("--by", help="Who (default: the login name).")] = None) -> None:
    """Make VERSION_ID production (compare-and-swap against --expect or the current one)."""
    from retrainer.cli.controls import who
    from retrainer.services import registry

    with db() as session:
        version = registry.promote(session, version_id, expect, actor=who(by), reason=reason)
    typer.echo(json.dumps({"status": "success", "message": f"Model {version.version_id} promoted to production",
                           "version_id": version.version_id}))


@app.command()
def rollback(model: str,
             to: Annotated[str | None, typer.Option("--to", help="Any earlier production version of MODEL.")] = None,
             reason: Annotated[str, typer.Option(help="Why: kept in the promotion ledger.")] = "",
             by: Annotated[str | None, typer.Option("--by", help="Who (default: the login name).")] = None) -> None:
    """Return MODEL to the version the current production replaced, or --to an earlier production version
    whose artifact still verifies (`retrainer ledger MODEL` lists them)."""
    from retrainer.cli.controls import who
    from retrainer.services import registry

    get_settings().model(model)
    with db() as session:
        version = registry.rollback(session, model, actor=who(by), to=to, reason=reason)
    typer.echo(json.dumps({"status": "success", "message": f"{model} rolled back to {version.version_id}",
                           "version_id": version.version_id}))


def _fail(message: object, code: int) -> NoReturn:
    """Print the problem, one line per line of it, on stderr (plain: rich would wrap long lines) and exit."""
    for line in str(message).splitlines() or [type(message).__name__]:
        print(f"error: {line}", file=sys.stderr)
    sys.exit(code)


def _raised(exc: BaseException, module: str, name: str) -> bool:
    """isinstance(exc, module.name) without importing `module`: a class whose module this process never
    imported cannot have been raised, and `--help` need not import SQLAlchemy, kombu or pandas to know."""
    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(exc, cls)


def main() -> None:
    """Entry point: every known problem prints one line naming it and what to do, never a traceback.

    Exit codes: 2 configuration (settings, YAML, environment, FLOWER_BASIC_AUTH, a bad option); 1
    everything else a user can meet (unknown model or version, lost compare-and-swap, a retrain that
    ended in error, no worker on the queue, server unreachable, no schema); 3 insufficient data
    (`retrain`, `check`)."""
    from retrainer.services.errors import NotFound, PromotionConflict, RequestConflict, ServiceUnavailable

    for warning in unknown_env_warnings():  # first: a typo may be what the configuration error is about
        print(f"warning: {warning}", file=sys.stderr)
    try:
        app()
    except ConfigError as exc:
        _fail(exc, 2)
    except Exception as exc:
        if _raised(exc, "sqlalchemy.exc", "DBAPIError"):
            from retrainer.tasks.health import explain_database_error

            _fail(explain_database_error(get_settings().database_url, exc), 1)
        if _raised(exc, "kombu.exceptions", "OperationalError"):  # the broker went away after the check
            from retrainer.services.errors import BrokerUnreachable
            from retrainer.tasks.health import broker_reason

            _fail(BrokerUnreachable(get_settings().broker_url, broker_reason(exc)), 1)
        # UnknownModel and InvalidEvent are a LookupError and a ValueError
        if (isinstance(exc, (NotFound, PromotionConflict, RequestConflict, ServiceUnavailable, LookupError, ValueError, TimeoutError,
                             OSError))
                or _raised(exc, "retrainer.models.base", "ArtifactError")):
            _fail(exc, 1)
        raise


# Command groups in their own modules register on `app` (kept below its definition: they import it).
from retrainer.cli import (  # noqa: F401
    api,
    controls,
    decisions,
    drift,
    inputs,
    replay,
    reports,
)
from retrainer.cli import up as up_command  # noqa: E402, F401  (a bare `up` is also a local name above)
