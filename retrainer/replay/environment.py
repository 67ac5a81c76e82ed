"""Where a replay runs: its settings, its model's configuration, its worker.

Without `--config` a replay runs on its own embedded default (SQLite + the filesystem broker) in its
own folder, whatever RETRAINER_* variables or a retrainer.yaml here say (as `retrainer demo` does).
With `--config FILE` the file (and RETRAINER_* variables, as every command reads them) gives the
database and the broker, e.g. PostgreSQL and Redis, and may define the model fully; everything the
replay writes to disk (artifacts, logs, broker folders, the clock file) stays in its own folder, its
Redis keys get a prefix of their own (so only its own worker takes its messages), and no decision is
posted to Slack.

The model's configuration, when `--config` does not define it, is its family's defaults except what a
stream's time scale and an unattended replay need (`model_config`); replay then drives the checks its
schedules name itself, in simulated time (retrainer/replay/beat.py).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from retrainer.clock import CLOCK_FILE_ENV
from retrainer.config import Settings, get_settings, mask_url, reset_settings
from retrainer.demo.processes import CeleryProcess, child_env, foreign_settings, start_worker, write_config
from retrainer.models.base import Live
from retrainer.replay.stream import ReplayInputError

# Checks the generated configuration turns on; replay runs each at its schedule's simulated times.
# The accuracy check hourly, against a relative threshold (below); the drift check at production's
# schedule. Off: new_data and the weekly retrain (clocks: they retrain on time, not on evidence, which
# is what the periodic baseline measures), errors (a fine-tune on a handful of confident mistakes; on a
# noisy stream it fires daily), monitor (a CSV has no accept/reject feedback). `probation` keeps its
# default when the configuration has it. A --config model keeps its own schedules.
SCHEDULES: dict[str, str | None] = {"check": "0 * * * *", "drift": "15 * * * *", "new_data": None,
                                    "retrain": None, "errors": None, "monitor": None}
# The accuracy check's breach: the live metric this much worse than the production version's own
# holdout figure. Each is about 2.5 standard deviations of the noise of comparing a day's window
# (1,440 outcomes at a row a minute) with a 400-row holdout: accuracy near 0.9 (sd ~0.017 of 0.9:
# 5 % = 0.045), and MAE (the mean of |error|, whose relative sd is ~0.76/sqrt(n): ~4.3 % together).
RELATIVE_PCT = {Live.CLASSIFICATION: 5.0, Live.REGRESSION: 10.0}
ACCURACY_MIN_SAMPLES = 500  # outcomes of the production version before the check judges it


def model_config(family: str, kind: Live, classes: int, warmup: int) -> dict[str, Any]:
    """The generated configuration of a replayed model (README: retrainer replay)."""
    return {
        "family": family,
        "params": {"task": "multiclass"} if family == "classifier" and classes > 2 else {},
        "schedules": SCHEDULES,
        "accuracy": {"relative_pct": RELATIVE_PCT[kind], "lookback_days": 1, "min_samples": ACCURACY_MIN_SAMPLES},
        # A stream's recent past: two warm-ups of rows (the periodic baseline uses the same window).
        "training": {"max_rows": 2 * warmup},
        "debounce_seconds": 0,
    }


def embedded(var_dir: Path) -> dict[str, Any]:
    return {"var_dir": str(var_dir), "database_url": f"sqlite:///{var_dir / 'retrainer.db'}",
            "broker_url": "filesystem://", "result_backend": f"db+sqlite:///{var_dir / 'celery-results.db'}"}


def from_config(config: Path, var_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The database and broker settings a --config file (and RETRAINER_* variables) give, and its models."""
    if not config.is_file():
        raise ReplayInputError(f"--config {config}: no such file")
    os.environ["RETRAINER_CONFIG"] = str(config.resolve())
    reset_settings()
    base = get_settings()  # a bad value raises ConfigError: one line per key, exit 2
    data = base.model_dump(mode="json", include={"database_url", "broker_url", "result_backend", "redis_key_prefix",
                                                 "worker_threads", "recovery"})
    url = sa.make_url(base.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_absolute():
        data["database_url"] = str(url.set(database=str(Path(url.database).resolve())))  # the worker runs elsewhere
    if base.broker_url.startswith("filesystem"):
        data["broker_url"] = "filesystem://"  # its folders are under the replay's own var_dir
    if base.result_backend.startswith("db+sqlite"):
        data["result_backend"] = embedded(var_dir)["result_backend"]
    data["redis_key_prefix"] = f"{base.redis_key_prefix}-replay-{uuid.uuid4().hex[:8]}"
    data["var_dir"] = str(var_dir)
    models = {name: cfg.model_dump(mode="json") for name, cfg in base.models.items()}
    return data, models


def settle(data: dict[str, Any], var_dir: Path) -> tuple[Settings, Path]:
    """Write the replay's settings to its folder and make them this process's only settings: RETRAINER_*
    and Celery's URL variables are dropped (the worker inherits this environment) and RETRAINER_CONFIG
    names that file. Returns the settings and the file."""
    data = data | {"artifact_dir": str(var_dir / "artifacts"), "slack_webhook_url": None}
    path = write_config(data, var_dir / "replay.yaml")
    for name in [name for name in os.environ if foreign_settings(name)]:
        del os.environ[name]
    os.environ["RETRAINER_CONFIG"] = str(path.resolve())
    reset_settings()
    settings = get_settings()
    for key in ("database_url", "broker_url"):  # a settings source that leaked in would write elsewhere
        if getattr(settings, key) != data[key]:
            raise RuntimeError(f"replay: refusing to run with {key} {mask_url(getattr(settings, key))}")
    return settings, path


def worker(var_dir: Path, config: Path, clock_file: Path) -> CeleryProcess:
    """A real worker on the training queue (and notifications, which a decision sends), reading the
    replay's settings and its simulated time."""
    env = child_env(config) | {CLOCK_FILE_ENV: str(clock_file.resolve())}
    return start_worker(var_dir / "worker.log", "training,notifications", concurrency=1, name="replay", env=env,
                        cwd=var_dir)
