"""Health checks of the servers the configuration names, and the worker's start-up check.

A worker whose database is unreachable (or has no schema) would report "ready", take messages and
fail every one of them. `celeryd_after_setup` runs in the worker's main process after logging is set
up and before the pool starts or "ready" is logged: there the check logs one line and stops the
worker with a non-zero exit (WorkerShutdown is a SystemExit: WorkController.start turns it into
stop(exitcode), without a traceback). The CLI uses the same checks to explain a failure in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery
from celery.exceptions import WorkerShutdown
from celery.signals import celeryd_after_setup
from sqlalchemy.pool import NullPool

from retrainer.config import get_settings, unknown_env_warnings
from retrainer.db.migrate import head_revision
from retrainer.models.base import check_models
from retrainer.services.errors import BrokerUnreachable, DatabaseUnreachable, SchemaMissing, ServiceUnavailable

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 3.0  # a healthy server answers in milliseconds; a dead one must not stall a start


def database_reason(exc: sa.exc.DBAPIError) -> str:
    """The driver's first line, shortened to its cause: 'connection refused', 'database "x" does not exist'."""
    line = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    reason = line.rpartition("failed: ")[2].removeprefix("FATAL:").strip() or line
    return reason[:1].lower() + reason[1:]


def check_database(url: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """Raise DatabaseUnreachable or SchemaMissing unless `url` answers and holds the migrated schema."""
    backend = sa.make_url(url).get_backend_name()
    if backend == "sqlite":
        path = sa.make_url(url).database
        if path and path != ":memory:" and not Path(path).is_file():
            raise SchemaMissing(url)  # connecting would create an empty file: say so instead
        connect_args: dict[str, Any] = {}
    else:
        connect_args = {"connect_timeout": max(1, round(timeout))}  # psycopg's connect timeout
    engine = sa.create_engine(url, connect_args=connect_args, poolclass=NullPool)
    try:
        with engine.connect() as conn:  # Alembic's version table, read without running Alembic (it logs)
            revision = sa.inspect(conn).has_table("alembic_version") and conn.scalar(
                sa.text("SELECT version_num FROM alembic_version"))
    except sa.exc.DBAPIError as exc:
        raise DatabaseUnreachable(url, database_reason(exc)) from None
    finally:
        engine.dispose()
    if not revision:
        raise SchemaMissing(url)
    if revision != (head := head_revision()):  # an upgrade shipped code before `retrainer init` ran
        raise SchemaMissing(url, found=revision, needed=head)


def explain_database_error(url: str, exc: sa.exc.DBAPIError) -> str:
    """One line for a database error met by a command: unreachable or no schema if that is the cause."""
    try:
        check_database(url)
    except ServiceUnavailable as problem:
        return str(problem)
    return f"database error: {database_reason(exc)}"


# The transport options that bound a connect and a read, per broker scheme.
_REDIS_TIMEOUTS, _AMQP_TIMEOUTS = ("socket_timeout", "socket_connect_timeout"), ("read_timeout", "write_timeout")
_NETWORK_BROKERS = {"redis": _REDIS_TIMEOUTS, "rediss": _REDIS_TIMEOUTS,
                    "amqp": _AMQP_TIMEOUTS, "amqps": _AMQP_TIMEOUTS, "pyamqp": _AMQP_TIMEOUTS}


def check_broker(app: Celery, timeout: float = TIMEOUT_SECONDS) -> None:
    """Raise BrokerUnreachable unless the app's broker answers within about `timeout` seconds.

    Sending would otherwise wait on kombu's connection retries, and a server that accepts TCP but never
    answers would hold a socket without a read timeout for minutes."""
    url = app.conf.broker_url
    options = _NETWORK_BROKERS.get(url.split(":", 1)[0].lower())
    if options is None:
        return  # filesystem://, sqs: no server of ours to probe
    with app.connection_for_write(connect_timeout=timeout, transport_options=dict.fromkeys(options, timeout)) as conn:
        try:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        except Exception as exc:  # noqa: BLE001  kombu re-raises every transport's errors as OperationalError
            raise BrokerUnreachable(url, broker_reason(exc)) from None


def broker_reason(exc: BaseException) -> str:
    """'connection refused', 'timed out' from the OS error under kombu's and redis-py's wrappers."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return "timed out"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line.rstrip(".").lower()


@celeryd_after_setup.connect
def check_before_ready(sender: str, **_: Any) -> None:
    for warning in unknown_env_warnings():
        log.warning("%s", warning)
    if problems := check_models(get_settings().models):  # hyper-parameters, before the first retrain
        log.critical("%s: invalid configuration, not starting: %s", sender, "; ".join(problems))
        raise WorkerShutdown(2)
    try:
        check_database(get_settings().database_url)
    except ServiceUnavailable as exc:
        log.critical("%s: start-up health check failed, not starting: %s", sender, exc)
        raise WorkerShutdown(1) from None
