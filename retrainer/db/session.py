"""Engines and sessions. One engine per process and URL (a forked worker child makes its own);
one session per unit of work that commits or rolls back and always closes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

_engines: dict[tuple[int, str], sa.Engine] = {}

# The database went away, restarted or (SQLite) stayed locked: worth retrying the whole unit of work.
# Anything else (a constraint, bad data, a bug) fails the same way on a retry.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the demo's worker processes read while another writes; the busy timeout makes a
    # writer wait for the lock instead of failing at once with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so a read-then-write
        # transaction holds the write lock from the start (no upgrade deadlocks between processes).
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        _disable_pysqlite_autobegin(engine)
        return engine
    # A host that drops packets must fail a connect in seconds, not stall a task or a command for minutes.
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                            connect_args={"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {})


def _disable_pysqlite_autobegin(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None


def get_engine(url: str) -> sa.Engine:
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(url)
    return engine


def dispose_engines() -> None:
    """Drop this process's engines (worker shutdown; a forked child drops its parent's)."""
    for key in list(_engines):
        engine = _engines.pop(key)
        if key[0] == os.getpid():
            engine.dispose()
        else:
            engine.dispose(close=False)  # inherited through fork: forget, don't close the parent's sockets


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success, rolls back on error and always closes."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
