"""Helpers for tests: service checks, small settings, a real worker process, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrainer.config import Settings, load_settings

POSTGRES_SERVER = os.environ.get("RETRAINER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_SERVER = os.environ.get("RETRAINER_TEST_REDIS", "redis://127.0.0.1:6379/13")
REQUIRE = os.environ.get("RETRAINER_REQUIRE_SERVICES") == "1"
RUN_ID = uuid.uuid4().hex[:8]


def need(service: str, problem: str) -> None:
    message = f"{service} is not reachable ({problem})"
    if REQUIRE:
        pytest.fail(f"{message}; RETRAINER_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


def model_config(**overrides: Any) -> dict[str, Any]:
    """A small, fast ctr model config for tests (few trees, short windows)."""
    cfg: dict[str, Any] = {
        "family": "ctr",
        "params": {"n_estimators": 40, "max_depth": 3},
        "training": {"min_samples": 50, "time_limit_seconds": 120},
        "debounce_seconds": 1,
        "schedules": {"check": None, "retrain": None, "monitor": None},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def make_settings(tmp_path: Path, database_url: str, broker_url: str = "filesystem://", **extra: Any) -> Settings:
    data: dict[str, Any] = {
        "var_dir": str(tmp_path / "var"),
        "database_url": database_url,
        "broker_url": broker_url,
        "redis_key_prefix": f"rt-{RUN_ID}-{uuid.uuid4().hex[:6]}",
        "models": {"ctr": model_config()},
    } | extra
    if broker_url.startswith("redis"):
        data.setdefault("result_backend", broker_url)
    return load_settings(**data)


def write_config(settings: Settings, path: Path) -> Path:
    """The settings as a retrainer.yaml a worker subprocess reads through RETRAINER_CONFIG."""
    data = settings.model_dump(mode="json")
    if settings.slack_webhook_url is not None:
        data["slack_webhook_url"] = settings.slack_webhook_url.get_secret_value()
    path.write_text(yaml.safe_dump(data))
    return path



class Worker:
    """A `celery -A tasks worker` child process; stopped (and reaped) by the fixture."""

    def __init__(self, settings: Settings, workdir: Path, queues: str = "training,events,checks,notifications",
                 concurrency: int = 2):
        self.config = write_config(settings, workdir / "retrainer.yaml")
        self.log = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")}
        env |= {"RETRAINER_CONFIG": str(self.config), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queues, "-c", str(concurrency),
             "-l", "info", "--without-mingle", "--without-gossip", "-n", f"test-{uuid.uuid4().hex[:6]}@%h"],
            cwd=workdir, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_for("ready.", timeout=60)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker did not log {text!r} in {timeout}s:\n{self.output()[-3000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_until(predicate: Any, timeout: float = 60, interval: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
