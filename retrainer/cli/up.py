"""`retrainer up`: the whole service on one machine as one supervised command.

The schema is migrated (as `retrainer init`), then the worker(s), exactly one beat and the API start as
child processes, each in its own process group and logging to var_dir/logs/<role>.log. On the embedded
default (SQLite + the filesystem broker) one worker consumes every queue; on a server broker (Redis)
training gets a worker of its own (concurrency 1, prefetch 1, as compose runs it) and the short queues
another, so a long retrain never holds up events and checks.

Supervision is deliberately simple: when any child exits, `up` names it with its exit code and the last
lines of its log, stops the others and exits 1. It restarts nothing: a crash loop would hide the cause,
and a real supervisor (systemd, compose, Kubernetes) runs the roles one by one with `retrainer worker`,
`beat` and `api`. Ctrl-C or SIGTERM sends SIGTERM to each child (the API first, the workers last; a
worker's warm shutdown lets a running task finish), waits up to STOP_TIMEOUT seconds, then SIGKILLs
each child's process group and exits 0; a second Ctrl-C skips the wait. No child outlives `up`.

The children read the settings the way `up` does (the same environment, RETRAINER_CONFIG or a
retrainer.yaml in the working directory, which they share): nothing is written to disk (the API token
stays a variable), and beat follows an edited retrainer.yaml as `retrainer beat` does. With no
RETRAINER_API_TOKEN set, `up` makes one for its API child alone and prints it once, in the dashboard
link's fragment (#token=...), so the dashboard's buttons work on a fresh machine.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from retrainer.cli import _check_models, _fail, app, default_worker_name
from retrainer.config import get_settings
from retrainer.demo.processes import STOP_TIMEOUT

TAIL_LINES = 15  # of a dead child's log, shown on the terminal
SHORT_QUEUES = "events,checks,notifications"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """Ctrl-C, SIGTERM or SIGHUP reached `up`: stop every child and exit 0."""


class ChildFailed(Exception):
    """A child exited (or never became ready): the message names it, the log has why."""

    def __init__(self, role: str, log: Path, what: str):
        self.role, self.log = role, log
        super().__init__(f"{role} {what}")


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise Stopped(signal.Signals(signum).name)


def worker_roles(broker_url: str, concurrency: int) -> list[tuple[str, str, int]]:
    """(role, queues, concurrency) of each worker: one for every queue on the embedded broker, where
    a second process would only poll the same folder; training apart on a server broker."""
    from retrainer.demo.processes import ALL_QUEUES

    if broker_url.startswith("filesystem"):
        return [("worker", ALL_QUEUES, concurrency)]
    return [("worker-training", "training", 1), ("worker-default", SHORT_QUEUES, concurrency)]


def shown_url(host: str, port: int) -> str:
    """The URL to open: a wildcard bind is reached on the loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def tail(log: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


class Children:
    """The started children by role, in start order; stopped in reverse."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[tuple[str, Any]] = []

    def log(self, role: str) -> Path:
        return self.log_dir / f"{role}.log"

    def add(self, role: str, child: Any, what: str) -> None:
        self.started.append((role, child))
        typer.echo(f"{role:<16} pid {child.proc.pid:<8} {what}  log {self.log(role)}")

    def wait_ready(self, role: str, child: Any, text: str, timeout: float) -> None:
        try:
            child.wait_for(text, timeout)
        except RuntimeError:  # CeleryProcess.wait_for: it exited
            raise ChildFailed(role, self.log(role), f"(pid {child.proc.pid}) exited with {exit_status(child.proc.returncode)}"
                              " while starting") from None
        except TimeoutError:
            raise ChildFailed(role, self.log(role), f"(pid {child.proc.pid}) did not log {text!r} within {timeout:.0f} s")\
                from None

    def first_dead(self) -> tuple[str, Any] | None:
        return next(((role, child) for role, child in self.started if not child.alive()), None)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to every child's main process, one shared wait, then SIGKILL to each process group;
        every child reaped (processes.stop_all). A signal that arrives meanwhile (a second Ctrl-C) ends
        the wait instead of interrupting the stop."""
        from retrainer.demo.processes import stop_all

        hurry = False

        def _hurry(_signum: int, _frame: Any) -> None:
            nonlocal hurry
            hurry = True

        for sig in STOP_SIGNALS:
            signal.signal(sig, _hurry)
        stop_all([child for _, child in reversed(self.started)], timeout, hurry=lambda: hurry)


def exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def _report(failure: ChildFailed) -> None:
    lines = tail(failure.log)
    print(f"error: {failure}; " + (f"the last lines of {failure.log}:" if lines else f"{failure.log} is empty"),
          file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)


def _start(children: Children, settings: Any, host: str, port: int, concurrency: int, loglevel: str,
           session_token: str | None = None) -> None:
    from retrainer.demo.processes import CeleryProcess, start_beat, start_worker

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for role, queues, n in worker_roles(settings.broker_url, concurrency):
        try:
            worker = start_worker(children.log(role), queues, n, env=env, loglevel=loglevel,
                                  hostname=default_worker_name(queues))
        except (RuntimeError, TimeoutError) as exc:  # start_worker stopped it; its first line says how
            raise ChildFailed(role, children.log(role), "did not start: " + str(exc).splitlines()[0]) from None
        children.add(role, worker, f"queues {queues}, concurrency {n}")

    schedule = settings.var_dir / "celerybeat-schedule"  # the file GET /healthz reads to see beat alive
    beat = start_beat(children.log("beat"), schedule, env)
    children.add("beat", beat, f"schedule {schedule}")
    children.wait_ready("beat", beat, "beat: Starting", 60)

    url = shown_url(host, port)
    api_env = env | ({"RETRAINER_API_TOKEN": session_token} if session_token else {})  # by environment, never argv
    api = CeleryProcess(["api", "--host", host, "--port", str(port), "--loglevel", loglevel], children.log("api"),
                        api_env, program=[sys.executable, "-m", "retrainer.cli"])
    children.add("api", api, f"{url}  (dashboard: {url}/dashboard, OpenAPI: {url}/docs)")
    children.wait_ready("api", api, "Uvicorn running on", 60)


@app.command()
def up(host: Annotated[str, typer.Option(help="Interface the API binds; 0.0.0.0 only inside a container.")] = "127.0.0.1",
       port: Annotated[int, typer.Option(min=1, max=65535, help="The API's port.")] = 8000,
       concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1,
                                                help="Worker processes for the short queues (all queues on "
                                                     "the embedded broker).")] = 2,
       loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info") -> None:
    """The whole service on this machine: migrate, worker(s), one beat and the API, supervised.

    Each child logs to var/logs/<role>.log. A child that exits stops them all (exit 1); Ctrl-C stops
    them cleanly (exit 0)."""
    from retrainer.cli.api import _port_problem
    from retrainer.db.migrate import current_revision, upgrade
    from retrainer.tasks.app import app as celery_app
    from retrainer.tasks.health import check_broker

    settings = get_settings()
    _check_models(settings)
    # Everything that can be known before a child starts is checked first: nothing is left half-up.
    if problem := _port_problem(host, port):
        _fail(problem, 1)
    check_broker(celery_app)  # a dead Redis: one line now, not a worker waiting on kombu's retries
    upgrade(settings.database_url)  # `retrainer init`: idempotent
    typer.echo(f"schema at revision {current_revision(settings.database_url)}")
    session_token = None
    if settings.api_token is None or not settings.api_token.get_secret_value().strip():
        # The dashboard's buttons need a token: this run makes one for its own API child, shown once, in the
        # fragment of the dashboard link (a browser never sends a fragment, so no server log holds it).
        session_token = secrets.token_urlsafe(24)

    log_dir = settings.var_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    children = Children(log_dir)
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    try:
        _start(children, settings, host, port, concurrency, loglevel, session_token)
        dashboard = f"{shown_url(host, port)}/dashboard"
        if session_token:
            typer.echo(f"dashboard: {dashboard}#token={session_token}\n  (no RETRAINER_API_TOKEN was set: this "
                       "token, made for this run, lets the dashboard and scripts write until Ctrl-C)")
        else:
            typer.echo(f"dashboard: {dashboard}  (its buttons ask for your RETRAINER_API_TOKEN once)")
        typer.echo("retrainer is up; Ctrl-C stops it")
        _supervise(children)
    except Stopped as stop:
        typer.echo(f"{stop}: stopping {', '.join(role for role, _ in reversed(children.started)) or 'nothing'}")
        children.stop()
        typer.echo("stopped")
    except KeyboardInterrupt:  # raised before our handler was installed or by a library re-raising it
        children.stop()
    except ChildFailed as failure:
        _report(failure)
        children.stop()
        print("error: stopped the others; fix the cause and run `retrainer up` again", file=sys.stderr)
        sys.exit(1)
    except BaseException:
        children.stop()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(children: Children) -> NoReturn:
    while True:
        if dead := children.first_dead():
            role, child = dead
            raise ChildFailed(role, children.log(role), f"(pid {child.proc.pid}) exited with "
                                                         f"{exit_status(child.proc.returncode)}")
        time.sleep(0.5)
