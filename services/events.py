"""Producer events: validated (services/validation.py), stored first, then coalesced into at most one pending retrain per model
(services/retrain_requests.py).

A purchase is a labelled row (features + value) that also asks for a retrain; an outcome attaches
the real value to a logged prediction.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from retrainer.services import audit, predictions, retrain_requests, validation
from retrainer.services.errors import InvalidEvent, PredictionNotFound
from retrainer.services.retrain_requests import Enqueue
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db import TRANSIENT_ERRORS
from retrainer.db.records import Observation

MAX_BATCH = 10_000
# What a store may still meet after validation (a row the database refuses): reported per row. A
# transient error (TRANSIENT_ERRORS) is not one of them: it propagates, so the caller retries.
DATA_ERRORS = (sa.exc.StatementError, UnicodeError)


@dataclass(frozen=True, slots=True)
class PurchaseEvent:
    model: str
    features: dict[str, float | int | str]
    value: float
    event_id: str | None = None
    occurred_at: datetime | None = None
    type: Literal["purchase"] = "purchase"


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    prediction_id: str
    value: float
    event_id: str | None = None
    occurred_at: datetime | None = None
    type: Literal["outcome"] = "outcome"


_REQUIRED = {"purchase": ("model", "features", "value"), "outcome": ("prediction_id", "value")}
_COMMON = ("type", "event_id", "occurred_at")  # event_id and occurred_at may be absent or null


@dataclass
class Stored:
    stored: int = 0
    duplicates: int = 0
    coalesced: int = 0
    enqueue: list[Enqueue] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


def parse(payload: Any) -> PurchaseEvent | OutcomeEvent:
    """Validate one raw event (dict, JSON text or UTF-8 bytes). Whatever the input, the only error is
    InvalidEvent, whose message names the field and the problem (services/validation.py)."""
    doc = validation.decode(payload)
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in _REQUIRED:
        got = "missing" if "type" not in doc else f"got {validation.show(kind)}"
        raise InvalidEvent(f"type: expected 'purchase' or 'outcome', {got}")
    required = _REQUIRED[kind]
    for name in doc:
        if name not in required and name not in _COMMON:
            raise InvalidEvent(f"{validation.show(name)}: unknown field (an event of type {kind} has "
                               f"{', '.join(required + _COMMON)})")
    for name in required:
        if name not in doc:
            raise InvalidEvent(f"{name}: missing (an event of type {kind} needs {', '.join(required)})")
    value = validation.number(doc["value"], "value")
    event_id = doc.get("event_id")
    if event_id is not None:
        event_id = validation.text(event_id, "event_id", validation.MAX_ID_CHARS)
    occurred_at = doc.get("occurred_at")
    if occurred_at is not None:
        occurred_at = validation.moment(occurred_at, "occurred_at")
    if kind == "outcome":
        prediction_id = validation.text(doc["prediction_id"], "prediction_id", validation.MAX_ID_CHARS)
        return OutcomeEvent(prediction_id, value, event_id, occurred_at)
    model = validation.text(doc["model"], "model", validation.MAX_MODEL_CHARS)
    return PurchaseEvent(model, validation.features(doc["features"]), value, event_id, occurred_at)


def document(payload: Any) -> str:
    """The event as the compact JSON text the per-event path sends, with an event_id so that a
    re-delivery is a no-op. Validated first: InvalidEvent, and nothing to send, when it is bad."""
    doc = validation.decode(payload)
    if doc.get("event_id") is None:
        doc = {**doc, "event_id": uuid.uuid4().hex}
    parse(doc)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):  # a Python producer's occurred_at
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


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


def store(session: Session, settings: Settings, events: list[PurchaseEvent | OutcomeEvent], source: str = "event") -> Stored:
    """Store a batch in the caller's transaction and coalesce purchases per model. An event the
    database still refuses is reported in `rejected` by its index in `events`; its neighbours land."""
    if len(events) > MAX_BATCH:
        raise InvalidEvent(f"a batch holds at most {MAX_BATCH} events, got {len(events)}")
    now = clock.now()
    result = Stored()
    positions = [i for i, e in enumerate(events) if isinstance(e, PurchaseEvent)]
    purchases = [events[i] for i in positions]
    for event in purchases:
        settings.model(event.model)  # unknown model: UnknownModel names it, nothing stored
    rows = [
        {"model": e.model, "event_id": e.event_id or uuid.uuid4().hex, "features": e.features, "label": e.value,
         "event_time": e.occurred_at or now, "source": source, "created_at": now}
        for e in purchases
    ]
    inserted, failed = _insert_rows(session, rows)
    result.stored += len(inserted)
    result.duplicates += len(rows) - len(inserted) - len(failed)
    result.rejected += [(positions[row], reason) for row, reason in failed]
    for i, event in enumerate(events):
        if isinstance(event, OutcomeEvent):
            try:
                with session.begin_nested():
                    predictions.record_outcome(session, event.prediction_id, event.value, at=event.occurred_at)
                result.stored += 1
            except PredictionNotFound as exc:  # the rest of the batch still lands
                result.rejected.append((i, str(exc)))
            except DATA_ERRORS as exc:
                if isinstance(exc, TRANSIENT_ERRORS):
                    raise
                result.rejected.append((i, _refused(exc)))
    result.rejected.sort()
    per_model: dict[str, int] = {}
    for name in inserted:  # a duplicate (re-delivered) event asks for no retrain of its own
        per_model[name] = per_model.get(name, 0) + 1
    for model, count in per_model.items():
        job = retrain_requests.coalesce(session, settings, model, count)
        if job is None:
            result.coalesced += count
        else:
            result.enqueue.append(job)
            result.coalesced += count - 1
    return result


def _insert_rows(session: Session, rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[int, str]]]:
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
            failed.append((i, _refused(exc)))
    return inserted, failed


def _refused(exc: Exception) -> str:
    cause = getattr(exc, "orig", None) or exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return validation.storable(f"the database refused it: {type(cause).__name__}: {first}"[:300])


def reject(session: Session, payload: Any, error: str) -> None:
    """Keep a bad event with the reason, so it is never silently lost: a storable, truncated text of
    the payload (NUL and lone surrogates escaped), whatever it is (any depth, size or type)."""
    error = validation.storable(error[:500])
    audit.record(session, "event_rejected", f"event rejected: {error}", payload=validation.preview(payload), error=error)
