"""Shared fixtures: databases (SQLite, real PostgreSQL), real Redis, real worker processes.

A test that needs a server skips with the reason when the server is absent, and fails instead when
RETRAINER_REQUIRE_SERVICES=1 (CI). PostgreSQL tests get a schema of their own in database `test`;
Redis tests use database 13 and a key prefix unique to the run, deleted afterwards. Helpers that
tests import live in tests/support.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retrainer.config import Settings
from retrainer.db import dispose_engines, session_scope
from retrainer.db.migrate import upgrade
from retrainer.demo.processes import stop_all
from tests.support import POSTGRES_SERVER, REDIS_SERVER, RUN_ID, Worker, make_settings, need, start_test_worker

# --- PostgreSQL ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_server() -> str:
    try:
        engine = sa.create_engine(POSTGRES_SERVER, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any connection problem means: not available here
        need(f"PostgreSQL at {sa.make_url(POSTGRES_SERVER).host}:{sa.make_url(POSTGRES_SERVER).port}", type(exc).__name__)
    return POSTGRES_SERVER


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh schema in database `test`, dropped afterwards."""
    schema = f"rt_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(postgres_server)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{postgres_server}?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        dispose_engines()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """A fresh, migrated PostgreSQL schema."""
    upgrade(postgres_url)
    return postgres_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'retrainer.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs on SQLite and on the real PostgreSQL; the schema is migrated."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    upgrade(url)
    return url


# --- Redis --------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as exc:  # connection refused, timeout: not available here
        need(f"Redis at {REDIS_SERVER}", type(exc).__name__)
    yield REDIS_SERVER
    for key in client.scan_iter(match=f"rt-{RUN_ID}*", count=1000):
        client.delete(key)
    client.close()


# --- settings and a real worker ----------------------------------------------------------------

@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def session(settings: Settings) -> Iterator[Any]:
    with session_scope(settings.database_url) as s:
        yield s


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start(settings: Settings, **kwargs: Any) -> Worker:
        worker = start_test_worker(settings, tmp_path, **kwargs)
        started.append(worker)
        return worker

    yield start
    # The test is over: no warm shutdown to wait out (an idle worker takes 2-6 s, and one running a task
    # waits for it); every worker and its pool are killed at once, and reaped.
    stop_all(started, timeout=0)


