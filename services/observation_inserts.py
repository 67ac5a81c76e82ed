"""Purchase events' rows into the observations table (for services/events.py `store`): one multi-row
INSERT that skips a re-sent event (same event_id), then row by row, each in a savepoint, should the
database refuse the chunk, so only the refused rows are lost. Also what every store counts as a row
the database refused (`DATA_ERRORS`) and the reason it keeps for one (`refusal_reason`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db import TRANSIENT_ERRORS
from retrainer.db.records import Observation
from retrainer.services import validation

# What a store may still meet after validation (a row the database refuses): reported per row. A
# transient error (TRANSIENT_ERRORS) is not one of them: it propagates, so the caller retries.
DATA_ERRORS = (sa.exc.StatementError, UnicodeError)


# PostgreSQL: the whole batch travels as ONE json parameter, unpacked by the server in one
# INSERT ... SELECT. A VALUES list needs 7 placeholders a row: SQLAlchemy splits it into statements of
# 1,000 rows, each ~100 kB of SQL that psycopg re-parses (too long for its statement cache) with
# per-row parameter processing on top; 3-4x slower for a 5,000-event chunk. Same rows, same order
# (the first of two events with one event_id wins), same RETURNING.
_PG_INSERT = sa.text(
    f"INSERT INTO {Observation.__tablename__} (model, event_id, features, label, event_time, source, created_at) "
    "SELECT r.model, r.event_id, r.features, r.label, r.event_time, r.source, r.created_at "
    "FROM json_to_recordset(CAST(:rows AS json)) AS r(model varchar, event_id varchar, features jsonb, "
    "label float8, event_time timestamptz, source varchar, created_at timestamptz) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING model"
)


def _pg_document(rows: list[dict[str, Any]]) -> str:
    # json.dumps writes floats in their shortest round-trip form, so float8 reads back the same value;
    # an aware datetime keeps its offset (timestamptz converts), a naive one is UTC.
    return json.dumps([r | {"event_time": _stamp(r["event_time"]), "created_at": _stamp(r["created_at"])} for r in rows])


def _stamp(moment: datetime) -> str:
    return moment.isoformat() if moment.tzinfo is not None else clock.as_utc(moment).isoformat()


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> list[str]:
    """One multi-row INSERT; a re-sent event (same event_id) is skipped, not an error.
    Returns the model of each row really inserted."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return list(session.scalars(_PG_INSERT, {"rows": _pg_document(rows)}))
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        session.execute(sa.insert(Observation), rows)
        return [r["model"] for r in rows]
    stmt = insert(Observation).on_conflict_do_nothing(index_elements=["event_id"]).returning(Observation.model)
    return list(session.scalars(stmt, rows))


def insert_rows(session: Session, rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[int, str]]]:
    """The chunk in one INSERT; should the database refuse it (a row validation let through), the
    chunk again row by row, each in a savepoint, so only the refused rows are lost. Returns the
    models of the inserted rows and (row index, reason) of the refused ones."""
    if not rows:
        return [], []
    try:
        with session.begin_nested():
            return _insert_ignoring_duplicates(session, rows), []
    except DATA_ERRORS as exc:
        if isinstance(exc, TRANSIENT_ERRORS):
            raise
    inserted: list[str] = []
    failed: list[tuple[int, str]] = []
    for i, row in enumerate(rows):
        try:
            with session.begin_nested():
                inserted += _insert_ignoring_duplicates(session, [row])
        except DATA_ERRORS as exc:
            if isinstance(exc, TRANSIENT_ERRORS):
                raise
            failed.append((i, refusal_reason(exc)))
    return inserted, failed


def refusal_reason(exc: Exception) -> str:
    cause = getattr(exc, "orig", None) or exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return validation.storable(f"the database refused it: {type(cause).__name__}: {first}"[:300])

