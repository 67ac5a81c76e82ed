"""What the benchmarks share: servers, a throw-away PostgreSQL schema, Redis clean-up, a real worker
process, timing, a small table printer and the JSON result files.

Importing this module first also points the module-level Celery app (tasks.app, built from the
process-wide settings when first imported) at a temporary var_dir, so a benchmark never writes
var/ into the working directory.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WORKDIR = Path(tempfile.mkdtemp(prefix="retrainer-bench-"))
atexit.register(shutil.rmtree, WORKDIR, True)
os.environ.setdefault("RETRAINER_VAR_DIR", str(WORKDIR / "default-var"))

import sqlalchemy as sa

from retrainer.config import Settings
from retrainer.db import dispose_engines
from retrainer.demo import processes
from retrainer.demo.processes import CeleryProcess, child_env, write_config

POSTGRES_SERVER = os.environ.get("RETRAINER_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_SERVER = os.environ.get("RETRAINER_BENCH_REDIS", "redis://127.0.0.1:6379/14")
RESULTS = Path(__file__).with_name("results")
RUN_ID = uuid.uuid4().hex[:8]


def _terminate(signum: int, _frame: Any) -> None:  # SIGTERM unwinds like Ctrl-C: finally blocks clean up
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _terminate)


# --- servers ------------------------------------------------------------------------------------

@contextmanager
def postgres_schema(label: str) -> Iterator[str]:
    """A fresh schema `bench_<label>_<random>` in database `test`; its URL; dropped afterwards."""
    schema = f"bench_{label}_{RUN_ID}"
    admin = sa.create_engine(POSTGRES_SERVER)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_SERVER}?options=-csearch_path%3D{schema}"
    finally:
        dispose_engines()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def postgres_version() -> str:
    engine = sa.create_engine(POSTGRES_SERVER)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_SERVER)


def redis_cleanup(prefix: str) -> int:
    """Delete every key of this run (the key prefix is unique to it); returns how many."""
    client = redis_client()
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def start_worker(settings: Settings, workdir: Path, queues: str, concurrency: int = 2) -> CeleryProcess:
    """A real `celery -A retrainer.tasks worker` child process reading these settings from a YAML file, started
    by the project's own launcher (retrainer.demo.processes: the same one the demo and the tests use)."""
    config = write_config(settings, workdir / "retrainer.yaml")
    return processes.start_worker(workdir / f"worker-{uuid.uuid4().hex[:6]}.log", queues=queues,
                                  concurrency=concurrency, name="bench", env=child_env(config), cwd=workdir)


# --- measuring ----------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], fmt: str = "{:.4g}") -> str:
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}" if values else "-"


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import pandas
    import sqlalchemy
    import xgboost

    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "loadavg_at_start": loadavg(),
        "python": platform.python_version(),
        "versions": {"numpy": numpy.__version__, "pandas": pandas.__version__, "sqlalchemy": sqlalchemy.__version__,
                     "xgboost": xgboost.__version__},
        "note": "shared, noisy machine: other engineers' test runs may overlap; medians over repeats",
    }


def rounded(value: Any, digits: int = 6) -> Any:
    """Floats to `digits` significant digits, recursively: small, stable, commit-friendly JSON."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rounded(data), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print(line)
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print(line)
    print(line)


def banner(text: str) -> None:
    print(f"\n{'!' * 78}\n!!! {text}\n{'!' * 78}", file=sys.stderr, flush=True)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def wilson(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (scipy's), for rates over simulated trials."""
    if n == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(hits, n).proportion_ci(confidence, method="wilson")
    return (float(ci.low), float(ci.high))
