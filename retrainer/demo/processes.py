"""Celery worker and beat as child processes: used by the demo, the integration tests and the
benchmarks, so all three run the same real processes the same way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from retrainer.config import Settings

ALL_QUEUES = "training,events,checks,notifications"
STOP_TIMEOUT = 20.0  # seconds a child gets for its warm shutdown (a running task may finish) before SIGKILL


def write_config(settings: Settings | dict[str, Any], path: Path) -> Path:
    """Settings as a retrainer.yaml that a child reads through RETRAINER_CONFIG (secrets included)."""
    if isinstance(settings, Settings):
        data = settings.model_dump(mode="json")
        for key in ("slack_webhook_url", "api_token"):  # dumped masked; a child needs the value itself
            secret = getattr(settings, key)
            if secret is not None:
                data[key] = secret.get_secret_value()
        for name, cfg in settings.models.items():  # a training query's database URL is a secret too
            source = cfg.training.source
            if source is not None and source.database_url is not None:
                data["models"][name]["training"]["source"]["database_url"] = source.database_url.get_secret_value()
    else:
        data = settings
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


# Celery reads these before its own configuration (celery/app/utils.py): exported for another app, they
# would point a child at that app's broker whatever `config` says.
CELERY_URL_VARIABLES = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL",
                        "CELERY_RESULT_BACKEND")


def foreign_settings(name: str) -> bool:
    """A variable that would override the settings a child is given: RETRAINER_* and Celery's URLs."""
    return name.upper().startswith("RETRAINER_") or name.upper() in CELERY_URL_VARIABLES


def child_env(config: Path) -> dict[str, str]:
    """This environment without RETRAINER_* overrides (nor Celery's URL variables), reading `config`."""
    env = {k: v for k, v in os.environ.items() if not foreign_settings(k)}
    return env | {"RETRAINER_CONFIG": str(config.resolve()), "PYTHONUNBUFFERED": "1"}


CELERY = [sys.executable, "-m", "celery", "-A", "retrainer.tasks"]


class CeleryProcess:
    """`python -m celery -A retrainer.tasks ARGS` (or `program` ARGS, e.g. `retrainer worker`, which
    becomes Celery) in its own process group, logging to a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
                 program: list[str] = CELERY):
        self.log = log
        self.proc = subprocess.Popen([*program, *args], cwd=cwd, env=env, stdout=log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if not self.alive():
                raise RuntimeError(f"celery exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"celery did not log {text!r} in {timeout}s:\n{self.output()[-3000:]}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Warm shutdown, then SIGKILL of its group; always reaped (see `stop_all`). `timeout=0`: killed
        at once, for a caller that needs nothing more from it."""
        stop_all([self], timeout)


def stop_all(processes: list[CeleryProcess], timeout: float = STOP_TIMEOUT,
             hurry: Callable[[], bool] = lambda: False) -> None:
    """SIGTERM to each process, one shared wait of up to `timeout` seconds (cut short once `hurry()`
    is true), then SIGKILL to each one's process group; every process reaped, in the order given.

    SIGTERM goes to each main process only: a Celery worker stops its own pool in its warm shutdown,
    and a worker whose pool processes got the SIGTERM too (the whole group) hangs in that shutdown
    once it has run tasks, until the SIGKILL. With `timeout` 0 there is no warm shutdown: SIGKILL at once."""
    for process in processes:
        if timeout > 0 and process.alive():
            process.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not hurry() and time.monotonic() < deadline and any(process.alive() for process in processes):
        time.sleep(0.05)
    for process in processes:
        if process.alive():
            _kill_group(process.proc.pid)
        process.proc.wait()
        _kill_group(process.proc.pid)  # a group outliving its leader (a pool process whose parent was killed)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is gone already
        pass


def start_worker(log: Path, queues: str = ALL_QUEUES, concurrency: int = 2, name: str = "worker",
                 env: dict[str, str] | None = None, cwd: Path | None = None, loglevel: str = "info",
                 ready_timeout: float = 90, hostname: str | None = None) -> CeleryProcess:
    """A worker, once it logged "ready.". Named `name`-<random>@%h (tests run many side by side), or
    `hostname` as given (`retrainer up`: the names `retrainer worker` gives)."""
    worker = CeleryProcess(
        ["worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel, "--without-mingle", "--without-gossip",
         "-n", hostname or f"{name}-{uuid.uuid4().hex[:6]}@%h"], log, env, cwd)
    try:
        worker.wait_for("ready.", ready_timeout)
    except BaseException:
        worker.stop()
        raise
    return worker


def start_beat(log: Path, schedule_file: Path, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> CeleryProcess:
    return CeleryProcess(["beat", "-s", str(schedule_file), "-l", "info"], log, env, cwd)
