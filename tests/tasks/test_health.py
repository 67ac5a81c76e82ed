"""retrainer.tasks.health: the server checks the CLI and the worker share, and a real `celery -A retrainer.tasks worker`
that refuses to start without its database (one log line, non-zero exit, never "ready") and warns
about misspelt RETRAINER_* variables."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery

from retrainer.config import Settings
from retrainer.db import session_scope
from retrainer.db.migrate import head_revision, upgrade
from retrainer.demo.processes import ALL_QUEUES, CeleryProcess, child_env, start_worker, write_config
from retrainer.services.errors import BrokerUnreachable, DatabaseUnreachable, SchemaMissing
from retrainer.tasks.app import make_app
from retrainer.tasks.health import check_broker, check_database, explain_database_error
from tests.support import make_settings

PASSWORD = "s3cret-Pw"
DEAD_POSTGRES = f"postgresql+psycopg://retrainer:{PASSWORD}@127.0.0.1:1/retrainer"  # nothing listens on port 1
UNREACHABLE = ("database unreachable at postgresql+psycopg://retrainer:***@127.0.0.1:1/retrainer (connection "
               "refused); is PostgreSQL running? (RETRAINER_DATABASE_URL)")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that completes the TCP handshake (the kernel does, from the backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def unmigrated_sqlite(tmp_path: Path) -> str:
    """A SQLite database that exists but has no retrainer schema (someone else's table only)."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE unrelated (id INTEGER)")
    conn.close()
    return f"sqlite:///{path}"


# --- the checks --------------------------------------------------------------------------------------

def test_dead_database_is_named_with_the_password_masked() -> None:
    with pytest.raises(DatabaseUnreachable) as info:
        check_database(DEAD_POSTGRES)
    assert str(info.value) == UNREACHABLE
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_silent_database_fails_within_the_connect_timeout(silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnreachable, match=r"\(connection timeout expired\); is PostgreSQL running\?"):
        check_database(f"postgresql+psycopg://retrainer:{PASSWORD}@127.0.0.1:{silent_port}/retrainer", timeout=1)
    assert time.monotonic() - started < 5


def test_database_without_schema(tmp_path: Path) -> None:
    url = unmigrated_sqlite(tmp_path)
    with pytest.raises(SchemaMissing) as info:
        check_database(url)
    assert str(info.value) == f"database at {url} has no retrainer schema; run `retrainer init`"
    missing = tmp_path / "never-created.db"
    with pytest.raises(SchemaMissing):
        check_database(f"sqlite:///{missing}")
    assert not missing.exists()  # checking does not leave an empty database behind


def test_a_database_behind_the_code_must_be_upgraded_first(sqlite_url: str) -> None:
    upgrade(sqlite_url, "0001")
    with pytest.raises(SchemaMissing, match=rf"schema revision 0001, this retrainer needs {head_revision()}; run"):
        check_database(sqlite_url)
    upgrade(sqlite_url)
    check_database(sqlite_url)


def test_migrated_database_passes_quickly(db_url: str) -> None:
    started = time.monotonic()
    check_database(db_url)
    assert time.monotonic() - started < 1  # a healthy worker start is not held up


def test_a_command_error_is_explained_by_its_cause(tmp_path: Path, sqlite_url: str) -> None:
    def error_of(url: str, sql: str) -> sa.exc.DBAPIError:
        with pytest.raises(sa.exc.DBAPIError) as info, session_scope(url) as session:
            session.execute(sa.text(sql))
        return info.value

    schemaless = unmigrated_sqlite(tmp_path)
    assert explain_database_error(schemaless, error_of(schemaless, "SELECT * FROM model_versions")) == \
        f"database at {schemaless} has no retrainer schema; run `retrainer init`"
    assert explain_database_error(DEAD_POSTGRES, error_of(DEAD_POSTGRES, "SELECT 1")) == UNREACHABLE
    from retrainer.db.migrate import upgrade

    upgrade(sqlite_url)
    other = error_of(sqlite_url, "SELECT no_such_column FROM model_versions")
    assert explain_database_error(sqlite_url, other) == "database error: no such column: no_such_column"


def broker_app(tmp_path: Path, url: str) -> Celery:
    return make_app(make_settings(tmp_path, "sqlite://", broker_url=url, result_backend="rpc://"))


def test_dead_broker_is_named_in_seconds(tmp_path: Path, silent_port: int) -> None:
    for url, reason in ((f"redis://:{PASSWORD}@127.0.0.1:1/0", "connection refused"),
                        (f"redis://:{PASSWORD}@127.0.0.1:{silent_port}/0", "timed out"),
                        (f"amqp://guest:{PASSWORD}@127.0.0.1:1//", "connection refused")):
        app = broker_app(tmp_path, url)
        started = time.monotonic()
        with pytest.raises(BrokerUnreachable) as info:
            check_broker(app, timeout=2)
        assert time.monotonic() - started < 8
        assert str(info.value).startswith(f"broker unreachable at {url.replace(PASSWORD, '***')} ({reason}); is ")
        assert PASSWORD not in str(info.value)
        app.close()


def test_embedded_broker_has_nothing_to_probe(tmp_path: Path) -> None:
    check_broker(make_app(make_settings(tmp_path, "sqlite://")))


@pytest.mark.redis
def test_live_redis_passes(tmp_path: Path, redis_url: str) -> None:
    app = broker_app(tmp_path, redis_url)
    check_broker(app)
    app.close()


# --- a real worker -----------------------------------------------------------------------------------

def worker_process(settings: Settings, tmp_path: Path) -> CeleryProcess:
    config = write_config(settings, tmp_path / "retrainer.yaml")
    return CeleryProcess(["worker", "-Q", ALL_QUEUES, "-c", "1", "-l", "info", "--without-mingle",
                          "--without-gossip", "-n", "health@%h"], tmp_path / "worker.log", child_env(config),
                         cwd=tmp_path)


@pytest.mark.worker
@pytest.mark.parametrize("database", ["dead postgres", "sqlite without schema",
                                      pytest.param("postgres without schema", marks=pytest.mark.postgres)])
def test_worker_without_its_database_exits_with_one_line(tmp_path: Path, request: pytest.FixtureRequest,
                                                         database: str) -> None:
    url = {"dead postgres": lambda: DEAD_POSTGRES, "sqlite without schema": lambda: unmigrated_sqlite(tmp_path),
           "postgres without schema": lambda: request.getfixturevalue("postgres_url")}[database]()
    worker = worker_process(make_settings(tmp_path, url), tmp_path)
    try:
        code = worker.proc.wait(timeout=60)
    finally:
        worker.stop()
    log = worker.output()
    assert code != 0, log
    failed = [line for line in log.splitlines() if "health check failed" in line]
    assert len(failed) == 1, log
    expected = UNREACHABLE if database == "dead postgres" else "has no retrainer schema; run `retrainer init`"
    assert "CRITICAL" in failed[0] and failed[0].endswith(expected)
    assert "ready." not in log and "Traceback" not in log and PASSWORD not in log


@pytest.mark.worker
def test_healthy_worker_starts_and_warns_about_a_misspelt_variable(tmp_path: Path, sqlite_db: str) -> None:
    config = write_config(make_settings(tmp_path, sqlite_db), tmp_path / "retrainer.yaml")
    env = child_env(config) | {"RETRAINER_SLACK_WEBHOOK": f"https://hooks.slack.com/services/{PASSWORD}"}
    worker = start_worker(tmp_path / "worker.log", concurrency=1, name="healthy", env=env, cwd=tmp_path)
    try:
        log = worker.output()
    finally:
        worker.stop(timeout=0)  # its log is read: no warm shutdown to wait out (an idle worker takes seconds)
    assert "ready." in log and "health check failed" not in log
    assert ("WARNING/MainProcess] RETRAINER_SLACK_WEBHOOK is not a retrainer setting; "
            "did you mean RETRAINER_SLACK_WEBHOOK_URL?") in log
    assert PASSWORD not in log
