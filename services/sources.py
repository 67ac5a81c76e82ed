"""A model's training rows from a read-only SQL query (`training.source` in the configuration), on the
user's own database or retrainer's.

The query is wrapped, never edited: `SELECT * FROM (<query>) AS source WHERE <time> BETWEEN <window>
ORDER BY <time> DESC, <id> DESC LIMIT <max_rows>`, so the newest rows inside the event window are
read, as from the observations table. It runs on a connection of its own in a READ ONLY transaction
(PostgreSQL) or with `PRAGMA query_only` (SQLite): a query that writes fails instead. Its columns other
than label, time and id are the features, typed by the same schema rules (services/schema.py).

Any database error is one line naming the model, the database (password masked) and the database's
own first line; it is not retried, since a wrong query stays wrong.
"""

from __future__ import annotations

import os
from decimal import Decimal

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import QuerySource, mask_url
from retrainer.db import get_engine
from retrainer.models.base import DataError
from retrainer.services import validation

_sqlite: dict[tuple[int, str], sa.Engine] = {}
KIND = "query"  # training_runs.source for a run that read a query ('observations' otherwise)


class SourceError(DataError):
    """The training query failed; the message is one line and never holds the password."""


def load(session: Session, model: str, source: QuerySource, max_rows: int,
         row_id: str, time: str, label: str) -> pd.DataFrame:
    """The newest `max_rows` rows of the query inside the event window, oldest first: row id, time
    (UTC), label and one column per other column of the query."""
    url = source.database_url.get_secret_value() if source.database_url else None
    own = session.get_bind()
    shown = mask_url(url or own.url.render_as_string(hide_password=False))
    try:
        if url is None and own.dialect.name == "sqlite":  # the session's connection: SQLite has one writer,
            names, rows = _run(session.connection(), source, max_rows)  # and this session may hold it
        else:
            with (_engine(url) if url else own).connect() as conn:
                names, rows = _run(conn, source, max_rows)
    except sa.exc.DBAPIError as exc:
        raise SourceError(_one_line(model, shown, exc, url)) from None
    reserved = {row_id, time, label} & (set(names) - {source.label, source.time, source.id})
    if reserved:
        raise SourceError(f"training query of {model!r}: column(s) {', '.join(sorted(reserved))} "
                          "clash with retrainer's own names; rename them in the query")
    missing = [c for c in (source.label, source.time, source.id) if c and c not in names]
    if missing:
        raise SourceError(f"training query of {model!r} has no column {', '.join(map(repr, missing))} "
                          f"(its columns: {', '.join(names)})")
    data = pd.DataFrame(rows[::-1], columns=names)  # newest first from SQL; oldest first here
    frame = pd.DataFrame({
        row_id: data[source.id] if source.id else pd.RangeIndex(1, len(data) + 1),
        time: pd.to_datetime(data[source.time], utc=True, errors="coerce", format="mixed"),
        label: data[source.label].map(_plain) if data[source.label].dtype == object else data[source.label],
    })
    for name in names:
        if name not in (source.label, source.time, source.id):
            column = data[name]
            frame[name] = column.map(_plain) if column.dtype == object else column
    unreadable = frame[time].isna().to_numpy()  # a time the database gave in no readable form
    frame = frame[~unreadable].reset_index(drop=True)
    frame.attrs["problems"] = {"event_time": int(unreadable.sum())} if unreadable.any() else {}
    return frame


def _run(conn: sa.Connection, source: QuerySource, max_rows: int) -> tuple[list[str], list[tuple[object, ...]]]:
    quote = conn.dialect.identifier_preparer.quote
    t = f"source.{quote(source.time)}"
    order = f"{t} DESC" + (f", source.{quote(source.id)} DESC" if source.id else "")
    wrapped = sa.text(f"SELECT * FROM ({source.query.rstrip().rstrip(';')}) AS source "
                      f"WHERE {t} BETWEEN :earliest AND :latest ORDER BY {order} LIMIT :limit")
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        conn.exec_driver_sql("PRAGMA query_only = ON")
    else:
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
    try:
        result = conn.execute(wrapped, {"earliest": validation.EARLIEST, "limit": max_rows,
                                        "latest": clock.now() + validation.MAX_AHEAD})
        return list(result.keys()), [tuple(r) for r in result]
    finally:
        if sqlite:  # the connection is the session's, or goes back to a pool
            conn.exec_driver_sql("PRAGMA query_only = OFF")
        else:
            conn.rollback()


def _engine(url: str) -> sa.Engine:
    """PostgreSQL: retrainer's pooled engine for the URL. SQLite: a plain one, without the BEGIN
    IMMEDIATE retrainer's own engines take, which would lock the user's file for writing."""
    if sa.engine.make_url(url).get_backend_name() != "sqlite":
        return get_engine(url)
    key = (os.getpid(), url)
    if key not in _sqlite:
        _sqlite[key] = sa.create_engine(url, connect_args={"timeout": 30})
    return _sqlite[key]


def _plain(value: object) -> object:
    """A database's exact decimal as a float, as JSON would carry it; anything else as it is."""
    return float(value) if isinstance(value, Decimal) else value


def _one_line(model: str, shown: str, exc: sa.exc.DBAPIError, url: str | None) -> str:
    lines = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
    message = f"training query of {model!r} failed on {shown}: {lines[0].strip()}"
    password = sa.engine.make_url(url).password if url else None
    return message.replace(password, "***") if password else message
