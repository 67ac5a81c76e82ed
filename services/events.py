"""Producer events: validated, stored first, then coalesced into at most one pending retrain per model.

A purchase is a labelled row (features + value) that also asks for a retrain; an outcome attaches
the real value to a logged prediction. Coalescing lives in the database: retrain_requests allows
one 'pending' row per model (partial unique index). The first event of a window creates it and is
told to enqueue one retrain with a countdown of the debounce window; later events join it. When the
retrain starts, the request turns 'running', so an event arriving during the run creates exactly
one new pending request: the follow-up.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import Observation, RequestStatus, RetrainRequest, Trigger
from services import audit, predictions
from services.errors import InvalidEvent, PredictionNotFound

MAX_EVENT_BYTES = 64 * 1024
MAX_BATCH = 10_000
STALE_PENDING = timedelta(minutes=10)  # a pending request whose message was lost gets re-sent


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str | None = Field(None, min_length=1, max_length=64)
    occurred_at: datetime | None = None
    value: float = Field(allow_inf_nan=False)


class PurchaseEvent(_Event):
    type: Literal["purchase"]
    model: str = Field(min_length=1, max_length=100)
    features: dict[str, Any]  # checked below: numbers or strings, finite, no booleans

    @field_validator("features")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return predictions.check_features(v)


class OutcomeEvent(_Event):
    type: Literal["outcome"]
    prediction_id: str = Field(min_length=1, max_length=64)


Event = Annotated[PurchaseEvent | OutcomeEvent, Field(discriminator="type")]
_adapter: TypeAdapter[Event] = TypeAdapter(Event)


@dataclass(frozen=True)
class Enqueue:
    """A retrain the caller must enqueue after its transaction commits."""

    model: str
    request_id: int
    countdown: float


@dataclass
class Stored:
    stored: int = 0
    duplicates: int = 0
    coalesced: int = 0
    enqueue: list[Enqueue] | None = None
    rejected: list[tuple[int, str]] | None = None


def parse(payload: Any) -> PurchaseEvent | OutcomeEvent:
    """Validate one raw event (dict or JSON text); InvalidEvent names the bad field."""
    if isinstance(payload, (str, bytes)):
        size = len(payload.encode() if isinstance(payload, str) else payload)  # bytes, not characters
        if size > MAX_EVENT_BYTES:
            raise InvalidEvent(f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}")
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise InvalidEvent(f"event is not valid JSON: {exc}") from None
    elif not _surely_small(payload):  # the common small event skips serialising (batch hot path)
        size = len(json.dumps(payload, default=str))
        if size > MAX_EVENT_BYTES:
            raise InvalidEvent(f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        return _adapter.validate_python(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise InvalidEvent(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def _surely_small(payload: Any) -> bool:
    """True when the event cannot reach MAX_EVENT_BYTES as JSON: at most 16 fields and 32 features,
    every key and string at most 40 characters (12 bytes each at worst once escaped): < 48 KiB."""
    if not isinstance(payload, dict) or len(payload) > 16:
        return False
    for key, value in payload.items():
        if not isinstance(key, str) or len(key) > 40:
            return False
        if isinstance(value, dict):
            if len(value) > 32 or not all(isinstance(k, str) and len(k) <= 40 and _short(v) for k, v in value.items()):
                return False
        elif not _short(value):
            return False
    return True


def _short(value: Any) -> bool:
    return len(value) <= 40 if isinstance(value, str) else value is None or isinstance(value, (int, float))


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
    if not rows:
        return []
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
    """Store a batch in the caller's transaction and coalesce purchases per model."""
    if len(events) > MAX_BATCH:
        raise InvalidEvent(f"a batch holds at most {MAX_BATCH} events, got {len(events)}")
    now = clock.now()
    result = Stored(enqueue=[])
    purchases = [e for e in events if isinstance(e, PurchaseEvent)]
    for event in purchases:
        settings.model(event.model)  # unknown model: UnknownModel names it, nothing stored
    rows = [
        {"model": e.model, "event_id": e.event_id or uuid.uuid4().hex, "features": e.features, "label": e.value,
         "event_time": e.occurred_at or now, "source": source, "created_at": now}
        for e in purchases
    ]
    inserted = _insert_ignoring_duplicates(session, rows)
    result.stored += len(inserted)
    result.duplicates += len(rows) - len(inserted)
    result.rejected = []
    for i, event in enumerate(events):
        if isinstance(event, OutcomeEvent):
            try:
                with session.begin_nested():
                    predictions.record_outcome(session, event.prediction_id, event.value, at=event.occurred_at)
                result.stored += 1
            except PredictionNotFound as exc:  # the rest of the batch still lands
                result.rejected.append((i, str(exc)))
    per_model: dict[str, int] = {}
    for name in inserted:  # a duplicate (re-delivered) event asks for no retrain of its own
        per_model[name] = per_model.get(name, 0) + 1
    for model, count in per_model.items():
        job = coalesce(session, settings, model, count)
        if job is None:
            result.coalesced += count
        else:
            result.enqueue.append(job)
            result.coalesced += count - 1
    return result


def coalesce(session: Session, settings: Settings, model: str, count: int = 1, trigger: Trigger = Trigger.EVENT,
             requested_by: str = "events", window: float | None = None) -> Enqueue | None:
    """Join the model's pending retrain request, or open one and return what to enqueue.
    `window` defaults to the model's debounce window (events); a check passes 0 (run now)."""
    cfg = settings.model(model)
    now = clock.now()
    window = cfg.debounce_seconds if window is None else window
    # Most calls join an open request: look for it first (one locking read) rather than paying for a
    # failed INSERT, its savepoint and the IntegrityError on every chunk of an event storm.
    pending = _pending(session, model)
    if pending is None:
        try:
            with session.begin_nested():
                request = RetrainRequest(
                    model=model, trigger=trigger, requested_by=requested_by,
                    reason=f"{count} {trigger.value} event(s)", status=RequestStatus.PENDING, event_count=count,
                    created_at=now, not_before=now + timedelta(seconds=window),
                )
                session.add(request)
            audit.record(session, "trigger", f"{model}: retrain requested by {requested_by} ({trigger.value})",
                         model=model, request_id=request.id, countdown=window)
            return Enqueue(model, request.id, window)
        except IntegrityError:  # another transaction opened it between our read and our insert: join it
            pending = _pending(session, model)
            if pending is None:  # it started running between our insert and this read: try once more
                return coalesce(session, settings, model, count, trigger, requested_by, window)
    pending.event_count += count
    if pending.not_before + STALE_PENDING < now:  # its message never ran: send it again, once a period
        pending.not_before = now
        return Enqueue(model, pending.id, 0)
    return None


def _pending(session: Session, model: str) -> RetrainRequest | None:
    """The model's open request, locked (FOR UPDATE) so concurrent joins add up instead of overwriting."""
    return session.scalar(
        sa.select(RetrainRequest)
        .where(RetrainRequest.model == model, RetrainRequest.status == RequestStatus.PENDING)
        .with_for_update()
    )


def reject(session: Session, payload: Any, error: str) -> None:
    """Keep what could not be stored (truncated) with the reason, so a bad event is never silently lost."""
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    audit.record(session, "event_rejected", f"event rejected: {error}", payload=text[:2000], error=error)
