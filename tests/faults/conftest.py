"""Fixtures for the fault-injection suite: private servers on free loopback ports, real workers.

Every test here is marked `faults` and never touches the shared servers at 6379/5432.

- `own_redis` (per test): a `servers.RedisServer` with AOF persistence, started. `own_redis.url(db)`,
  `.restart(down_seconds=1.0)` (graceful stop: the AOF is flushed), `.restart(1.0, kill=True)` or
  `.kill()` / `.start()` (SIGKILL, as a crash), `.client()` for raw redis-py access.
- `own_postgres` (per session; initdb takes seconds): a `servers.PostgresServer`. `.stop(mode="fast"
  | "immediate")`, `.start()`, `.restart(down_seconds=10.0, mode="fast")`, `.url(database)`. A test
  that stops it need not restart it: the next `fault_db` starts it again.
- `servers.private(RedisServer)` (a context manager): one more private server, e.g. a second Redis.
- `fault_db` (per test): the URL of a fresh database on `own_postgres`, migrated to head and dropped
  (WITH FORCE) afterwards.
- `fault_settings(**extra)`: `make_settings` on `fault_db` and `own_redis` (keyword arguments as
  in tests/support.py, e.g. `models={"ctr": model_config(debounce_seconds=3)}`).
- `start_worker(settings, queues=..., concurrency=...)`: the suite's real `celery worker` child
  (tests/conftest.py), here always stopped before the private servers go away. A worker is a
  `retrainer.demo.processes.CeleryProcess`: `.output()` is its log so far, `.alive()`, `.proc.pid` (the
  worker's main process; its pool children are `pgrep -P pid`), `.wait_for(text)`.
  `servers.unhealthy(*workers)` lists the dead ones and those that logged "Unrecoverable error";
  `servers.log_lines(workers, task_ids)` picks the log lines naming some tasks.
- `beat(settings)`: a real `celery beat` child for those settings: its `checks.reconcile` repairs what
  a fault left (give `recovery={...}` short periods in the settings).
- `make_celery(settings)`: a producer-side Celery app for `send_event(..., via=app)`/`send_retrain`.
- `event_storm(app, rate=100)`: a started producer thread sending purchases for model `ctr` (event ids
  `storm-0`, `storm-1`, ...) one Celery message each through `send_event`; `.sent` are the ids it
  was told were sent, `.refused` those whose send raised (`.errors` counts them by type), `.stop()`
  ends it, `.unstored(url[, ids])` lists the sent (or given) ids with no `observations` row,
  `.task_ids[event_id]` is the Celery task id of a sent event (worker logs name tasks by it).
  Stopped after the test.

Absent binaries (redis-server, PostgreSQL 15 in /usr/lib/postgresql/15/bin, runuser when root) skip
with the reason, or fail when RETRAINER_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from retrainer.config import Settings
from retrainer.db import dispose_engines, session_scope
from retrainer.db.migrate import upgrade
from retrainer.db.records import Observation
from retrainer.demo import synthetic
from retrainer.demo.processes import CeleryProcess, child_env, start_beat, stop_all, write_config
from retrainer.tasks.producer import send_event
from tests.faults.servers import PostgresServer, RedisServer, private
from tests.support import make_settings
from tests.tasks.conftest import make_celery  # noqa: F401  (the same producer-side apps as tests/tasks)

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m "not faults"` sees the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with private(RedisServer) as server:
        yield server


@pytest.fixture(scope="session")
def own_postgres() -> Iterator[PostgresServer]:
    with private(PostgresServer) as server:
        yield server


@pytest.fixture
def fault_db(own_postgres: PostgresServer) -> Iterator[str]:
    if not own_postgres.running():  # an earlier test left it stopped
        own_postgres.start()
    name = f"fault_{uuid.uuid4().hex[:10]}"
    own_postgres.execute(f'CREATE DATABASE "{name}"')
    url = own_postgres.url(name)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()  # this process's pooled connections to it
        if not own_postgres.running():
            own_postgres.start()
        own_postgres.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fault_settings(tmp_path: Path, fault_db: str, own_redis: RedisServer) -> Callable[..., Settings]:
    def settings(**extra: Any) -> Settings:
        return make_settings(tmp_path, fault_db, broker_url=own_redis.url(), **extra)

    return settings


@pytest.fixture
def start_worker(own_redis: RedisServer, fault_db: str, start_worker: Any) -> Any:
    """tests/conftest.py's start_worker, requested after the servers so its workers stop first
    (a worker whose broker is gone would spend its whole shutdown timeout reconnecting)."""
    return start_worker


@pytest.fixture
def beat(tmp_path: Path, own_redis: RedisServer, fault_db: str) -> Any:
    """`beat(settings)`: a real celery beat (its reconciler repairs what a fault left), stopped first."""
    started: list[CeleryProcess] = []

    def start(settings: Settings) -> CeleryProcess:
        config = write_config(settings, tmp_path / f"beat-{uuid.uuid4().hex[:6]}.yaml")
        process = start_beat(tmp_path / "beat.log", tmp_path / "celerybeat-schedule", child_env(config), cwd=tmp_path)
        started.append(process)
        return process

    yield start
    stop_all(started, timeout=0)  # as tests/conftest.py stops the workers: the test is over


class EventStorm(threading.Thread):
    """Purchases, one Celery message each, at `rate` a second (bounded: the workers must keep up)."""

    def __init__(self, app: Celery, rate: float):
        super().__init__(name="event-storm", daemon=True)
        self.app, self.interval = app, 1 / rate
        now = datetime.now(UTC)
        self.rows = synthetic.generate(100, now - timedelta(days=2), now, seed=11)
        self.sent: list[str] = []
        self.refused: list[str] = []
        self.errors: Counter[str] = Counter()
        self.task_ids: dict[str, str] = {}  # event id -> Celery task id, to find an event in worker logs
        self._stopping = threading.Event()

    def run(self) -> None:
        i, next_at = 0, time.monotonic()
        while not self._stopping.is_set():
            row, event_id = self.rows[i % len(self.rows)], f"storm-{i}"
            try:
                result = send_event({"type": "purchase", "model": "ctr", "features": row.features,
                                     "value": row.label, "event_id": event_id}, via=self.app)
            except Exception as exc:  # noqa: BLE001  (any error is what the producer is told: refused)
                self.refused.append(event_id)
                self.errors[type(exc).__name__] += 1
            else:
                self.sent.append(event_id)
                self.task_ids[event_id] = result.task_id
            i += 1
            next_at += self.interval
            self._stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)
        assert not self.is_alive(), "the producer thread did not stop within 30 s"

    def unstored(self, url: str, event_ids: list[str] | None = None) -> list[str]:
        """Of `event_ids` (default: the sent ones), those with no `observations` row."""
        with session_scope(url) as session:
            stored = set(session.scalars(sa.select(Observation.event_id).where(Observation.source == "event")))
        return [e for e in (self.sent if event_ids is None else event_ids) if e not in stored]


@pytest.fixture
def event_storm() -> Iterator[Callable[..., EventStorm]]:
    started: list[EventStorm] = []

    def start(app: Celery, rate: float = 100) -> EventStorm:
        storm = EventStorm(app, rate)
        storm.start()
        started.append(storm)
        return storm

    yield start
    for storm in started:
        storm.stop()
