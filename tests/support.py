"""Helpers for tests: service checks, small settings, a real worker process, waiting."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from retrainer.config import Settings, load_settings
from retrainer.demo.processes import ALL_QUEUES, CeleryProcess, child_env, start_worker, write_config

POSTGRES_SERVER = os.environ.get("RETRAINER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_SERVER = os.environ.get("RETRAINER_TEST_REDIS", "redis://127.0.0.1:6379/13")
REQUIRE = os.environ.get("RETRAINER_REQUIRE_SERVICES") == "1"
RUN_ID = uuid.uuid4().hex[:8]


def need(service: str, problem: str) -> None:
    message = f"{service} is not reachable ({problem})"
    if REQUIRE:
        pytest.fail(f"{message}; RETRAINER_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


SMALL_XGBOOST = {"n_estimators": 40, "max_depth": 3}  # few trees: fast, and still learns the synthetic data


def model_config(**overrides: Any) -> dict[str, Any]:
    """A small, fast model config for tests (few trees, short windows); ctr unless `family` says
    otherwise. Small XGBoost params apply to the XGBoost families only: others have their own."""
    family = overrides.get("family", "ctr")
    cfg: dict[str, Any] = {
        "family": family,
        "params": dict(SMALL_XGBOOST) if family in ("ctr", "regressor", "classifier") else {},
        "training": {"min_samples": 50, "time_limit_seconds": 120, "min_new_rows": 0},
        # small data: holdouts of tens of rows may decide, and a second promotion need not wait; the
        # judged artifact is deployed, so a second run on the same rows has a holdout to judge on (the
        # default refit trains on every row). Tests of these rules set them: test_promotion_rules.py
        "promotion": {"min_holdout_rows": 10, "cooldown_hours": 0, "deploy": "evaluated"},
        "debounce_seconds": 1,
        "schedules": {"check": None, "retrain": None, "monitor": None, "errors": None, "new_data": None, "drift": None,
                      "probation": None},
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


Worker = CeleryProcess


def start_test_worker(settings: Settings, workdir: Path, queues: str = ALL_QUEUES, concurrency: int = 2) -> Worker:
    """A real `celery -A retrainer.tasks worker` child reading `settings` from a YAML file."""
    config = write_config(settings, workdir / f"retrainer-{uuid.uuid4().hex[:6]}.yaml")
    return start_worker(workdir / f"worker-{uuid.uuid4().hex[:6]}.log", queues, concurrency, "test",
                        child_env(config), cwd=workdir)


def wait_until(predicate: Any, timeout: float = 60, interval: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
