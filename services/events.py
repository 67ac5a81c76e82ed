"""Producer events: validated (services/validation.py), stored first, then coalesced into at most one pending retrain per model
(services/retrain_requests.py).

A purchase is a labelled row (features + value) that also asks for a retrain; an outcome attaches
the real value to a logged prediction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db import TRANSIENT_ERRORS
from retrainer.db.records import Feedback, Observation, PredictionRecord
from retrainer.services import audit, live_rollup, predictions, retrain_requests, validation
from retrainer.services.controls import Suppressed
from retrainer.services.errors import InvalidEvent, PredictionNotFound
from retrainer.services.retrain_requests import Enqueue

MAX_BATCH = 10_000
# What a store may still meet after validation (a row the database refuses): reported per row. A
# transient error (TRANSIENT_ERRORS) is not one of them: it propagates, so the caller retries.
DATA_ERRORS = (sa.exc.StatementError, UnicodeError)


@dataclass(frozen=True, slots=True)
class PurchaseEvent:
    model: str
    features: dict[str, float | int | str | bool]
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
    targets: dict[str, float] = field(default_factory=dict)  # second targets' outcomes (ROAS beside CTR)


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """A prediction served elsewhere (the producer's own serving stack), logged for live accuracy.
    Its prediction_id (default: the event_id) is what a later outcome names."""

    model: str
    features: dict[str, float | int | str | bool]
    predicted: float  # a classifier's: its class
    prediction_id: str | None = None
    version_id: str | None = None
    confidence: float | None = None
    proba: dict[str, float] | None = None
    segments: dict[str, str] = field(default_factory=dict)
    event_id: str | None = None
    occurred_at: datetime | None = None  # when it was served
    type: Literal["prediction"] = "prediction"
    targets: dict[str, float] = field(default_factory=dict)  # second targets served beside it (ROAS beside CTR)


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """Accepts and rejects of a model's output in one learning cycle (one of each, or a cycle's counts):
    what the hourly accept-rate check averages (services/accept_rate.py)."""

    model: str
    cycle_id: str
    accepted: int
    rejected: int
    event_id: str | None = None
    occurred_at: datetime | None = None
    type: Literal["feedback"] = "feedback"


Event = PurchaseEvent | OutcomeEvent | PredictionEvent | FeedbackEvent
_REQUIRED = {"purchase": ("model", "features", "value"), "outcome": ("prediction_id", "value"),
             "prediction": ("model", "features", "predicted"), "feedback": ("model", "cycle_id", "accepted", "rejected")}
MAX_FEEDBACK_COUNT = 1_000_000  # accepts or rejects in one event: a cycle's counts, not a running total
_OPTIONAL = {"prediction": ("prediction_id", "version_id", "confidence", "proba", "segments", "targets"),
             "outcome": ("targets",)}  # may be null
_COMMON = ("type", "event_id", "occurred_at")  # event_id and occurred_at may be absent or null


@dataclass
class Stored:
    stored: int = 0
    duplicates: int = 0
    coalesced: int = 0
    enqueue: list[Enqueue] = field(default_factory=list)
    suppressed: dict[str, str] = field(default_factory=dict)  # model -> why its retrain was not asked for
    rejected: list[tuple[int, str]] = field(default_factory=list)


def parse(payload: Any) -> Event:
    """Validate one raw event (dict, JSON text or UTF-8 bytes). Whatever the input, the only error is
    InvalidEvent, whose message names the field and the problem (services/validation.py)."""
    doc = validation.decode(payload)
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in _REQUIRED:
        got = "missing" if "type" not in doc else f"got {validation.show(kind)}"
        raise InvalidEvent(f"type: expected 'purchase', 'outcome', 'prediction' or 'feedback', {got}")
    required = _REQUIRED[kind]
    known = required + _OPTIONAL.get(kind, ()) + _COMMON
    for name in doc:
        if name not in known:
            raise InvalidEvent(f"{validation.show(name)}: unknown field (an event of type {kind} has "
                               f"{', '.join(known)})")
    for name in required:
        if name not in doc:
            raise InvalidEvent(f"{name}: missing (an event of type {kind} needs {', '.join(required)})")
    event_id = doc.get("event_id")
    if event_id is not None:
        event_id = validation.text(event_id, "event_id", validation.MAX_ID_CHARS)
    occurred_at = doc.get("occurred_at")
    if occurred_at is not None:
        occurred_at = validation.moment(occurred_at, "occurred_at")
    if kind == "prediction":
        return _prediction(doc, event_id, occurred_at)
    if kind == "feedback":
        return _feedback(doc, event_id, occurred_at)
    value = validation.number(doc["value"], "value")
    if kind == "outcome":
        prediction_id = validation.text(doc["prediction_id"], "prediction_id", validation.MAX_ID_CHARS)
        return OutcomeEvent(prediction_id, value, event_id, occurred_at,
                            targets=predictions.check_targets(doc.get("targets")))
    model = validation.text(doc["model"], "model", validation.MAX_MODEL_CHARS)
    return PurchaseEvent(model, validation.features(doc["features"]), value, event_id, occurred_at)


def _feedback(doc: dict[Any, Any], event_id: str | None, occurred_at: datetime | None) -> FeedbackEvent:
    counts = {}
    for name in ("accepted", "rejected"):
        value = validation.number(doc[name], name, keep_int=True)
        if not isinstance(value, int) or not 0 <= value <= MAX_FEEDBACK_COUNT:
            raise InvalidEvent(f"{name}: expected a whole number from 0 to {MAX_FEEDBACK_COUNT:,}, got {validation.show(doc[name])}")
        counts[name] = value
    if not counts["accepted"] + counts["rejected"]:
        raise InvalidEvent("accepted, rejected: both 0; a feedback event counts at least one accept or reject")
    return FeedbackEvent(validation.text(doc["model"], "model", validation.MAX_MODEL_CHARS),
                         validation.text(doc["cycle_id"], "cycle_id", validation.MAX_ID_CHARS),
                         counts["accepted"], counts["rejected"], event_id, occurred_at)


def _prediction(doc: dict[Any, Any], event_id: str | None, occurred_at: datetime | None) -> PredictionEvent:
    """The fields predictions.log_prediction checks, checked here already so that a bad prediction is
    refused before it is sent; whether `predicted` is a class is known only from the model (store)."""
    def optional_text(name: str, max_chars: int) -> str | None:
        return None if doc.get(name) is None else validation.text(doc[name], name, max_chars)

    confidence = doc.get("confidence")
    return PredictionEvent(
        model=validation.text(doc["model"], "model", validation.MAX_MODEL_CHARS),
        features=validation.features(doc["features"]),
        predicted=float(validation.number(doc["predicted"], "predicted")),
        prediction_id=optional_text("prediction_id", validation.MAX_ID_CHARS),
        version_id=optional_text("version_id", 120),
        confidence=None if confidence is None else float(validation.number(confidence, "confidence")),
        proba=predictions.check_proba(doc.get("proba")),
        segments=predictions.check_segments(doc.get("segments")),
        targets=predictions.check_targets(doc.get("targets")),
        event_id=event_id,
        occurred_at=occurred_at,
    )


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


def store(session: Session, settings: Settings, events: list[PurchaseEvent | OutcomeEvent], source: str = "event",
          coalesce: bool = True) -> Stored:
    """Store a batch in the caller's transaction and coalesce purchases per model (unless `coalesce` is
    off: the caller asks for its retrain itself, as `ingest` does once per file). A purchase that does
    not fit its model (no features for a family that needs them; a feature of the production schema
    missing or of the wrong type) and an event the database still refuses are reported in `rejected`
    by index in `events`; their neighbours land."""
    if len(events) > MAX_BATCH:
        raise InvalidEvent(f"a batch holds at most {MAX_BATCH} events, got {len(events)}")
    now = clock.now()
    result = Stored()
    positions = [i for i, e in enumerate(events) if isinstance(e, PurchaseEvent)]
    for event in (events[i] for i in positions):
        settings.model(event.model)  # unknown model: UnknownModel names it, nothing stored
    misfits = _misfits(session, settings, [(i, events[i]) for i in positions])  # type: ignore[misc]
    result.rejected += misfits
    refused = {i for i, _ in misfits}
    positions = [i for i in positions if i not in refused]
    purchases = [events[i] for i in positions]
    rows = [
        {"model": e.model, "event_id": e.event_id or uuid.uuid4().hex, "features": e.features, "label": e.value,
         "event_time": e.occurred_at or now, "source": source, "created_at": now}
        for e in purchases
    ]
    inserted, failed = _insert_rows(session, rows)
    result.stored += len(inserted)
    result.duplicates += len(rows) - len(inserted) - len(failed)
    result.rejected += [(positions[row], reason) for row, reason in failed]
    _store_predictions(session, settings, events, result)  # before outcomes: one may name one of them
    _store_feedback(session, settings, events, result, now)
    rollup = live_rollup.Batch()  # the outcomes' live-accuracy changes, one UPSERT per hour bucket at the end
    for i, event in enumerate(events):
        if isinstance(event, OutcomeEvent):
            try:
                with session.begin_nested():
                    predictions.record_outcome(session, event.prediction_id, event.value, at=event.occurred_at,
                                               rollup=rollup, targets=event.targets or None)
                rollup.keep()  # the savepoint held: its change counts
                result.stored += 1
            except (PredictionNotFound, InvalidEvent) as exc:  # the rest of the batch still lands
                result.rejected.append((i, str(exc)))
            except DATA_ERRORS as exc:
                if isinstance(exc, TRANSIENT_ERRORS):
                    raise
                result.rejected.append((i, _refused(exc)))
    rollup.write(session)
    result.rejected.sort()
    per_model: dict[str, int] = {}
    for name in inserted:  # a duplicate (re-delivered) event asks for no retrain of its own
        per_model[name] = per_model.get(name, 0) + 1
    for model, count in per_model.items() if coalesce else ():
        job = retrain_requests.coalesce(session, settings, model, count)
        if isinstance(job, Suppressed):  # stored all the same; the retrain it would ask for is recorded as suppressed
            result.suppressed[model] = job.reason
        elif job is None:
            result.coalesced += count
        else:
            result.enqueue.append(job)
            result.coalesced += count - 1
    return result


def _misfits(session: Session, settings: Settings, purchases: list[tuple[int, PurchaseEvent]]) -> list[tuple[int, str]]:
    """(index, reason) of each purchase its model cannot train on: no features where the family needs
    some, or (only once a production version recorded a schema) a schema feature missing or of the
    wrong type. One schema read per model in the batch."""
    # Here, not at the top: a producer that only parses events never loads pandas (schema's).
    from retrainer.models.base import family_class  # the entry point only, not the family's library
    from retrainer.services import schema

    models = {e.model for _, e in purchases}
    schemas = {m: schema.production(session, m) for m in models}
    time_only = {m: family_class(settings.model(m).family).needs_time for m in models}
    out = []
    for i, event in purchases:
        if not event.features and not time_only[event.model]:
            out.append((i, f"features: empty; model {event.model!r} needs at least one feature"))
        elif (fits := schemas[event.model]) is not None and (problem := fits.check(event.features)):
            out.append((i, problem))
    return out


def _store_predictions(session: Session, settings: Settings, events: list[Event], result: Stored) -> None:
    """Log each prediction event; one whose prediction_id is already logged is a duplicate (a
    re-delivery), not an error. A prediction is no labelled row: it asks for no retrain."""
    from retrainer.models.base import family_class  # the entry point only, not the family's library

    for i, event in enumerate(events):
        if not isinstance(event, PredictionEvent):
            continue
        prediction_id = event.prediction_id or event.event_id or uuid.uuid4().hex
        if session.scalar(sa.select(PredictionRecord.id).where(PredictionRecord.prediction_id == prediction_id)):
            result.duplicates += 1
            continue
        try:
            kind = family_class(settings.model(event.model).family).metric_spec.live
            with session.begin_nested():
                predictions.log_prediction(
                    session, event.model, event.features, event.predicted, version_id=event.version_id,
                    confidence=event.confidence, segments=event.segments, proba=event.proba,
                    prediction_id=prediction_id, at=event.occurred_at, kind=kind, targets=event.targets or None)
                session.flush()
            result.stored += 1
        except (LookupError, InvalidEvent) as exc:  # an unknown model; a class that is no whole number
            result.rejected.append((i, str(exc)))
        except sa.exc.IntegrityError:  # logged by a concurrent delivery between the read and the insert
            result.duplicates += 1
        except DATA_ERRORS as exc:
            if isinstance(exc, TRANSIENT_ERRORS):
                raise
            result.rejected.append((i, _refused(exc)))


def _store_feedback(session: Session, settings: Settings, events: list[Event], result: Stored, now: datetime) -> None:
    """Feedback events in one INSERT; a re-delivered one (same event_id) is a duplicate. They ask for
    no retrain: the hourly monitor decides (services/accept_rate.py)."""
    rows, positions = [], []
    for i, event in enumerate(events):
        if not isinstance(event, FeedbackEvent):
            continue
        try:
            settings.model(event.model)
        except LookupError as exc:
            result.rejected.append((i, str(exc)))
            continue
        positions.append(i)
        rows.append({"model": event.model, "cycle_id": event.cycle_id, "accepted": event.accepted,
                     "rejected": event.rejected, "recorded_at": event.occurred_at or now,
                     "event_id": event.event_id or uuid.uuid4().hex})
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Feedback).on_conflict_do_nothing(index_elements=["event_id"]).returning(Feedback.id)
    try:
        with session.begin_nested():
            stored = len(list(session.scalars(stmt, rows)))
    except DATA_ERRORS as exc:
        if isinstance(exc, TRANSIENT_ERRORS):
            raise
        result.rejected += [(i, _refused(exc)) for i in positions]
        return
    result.stored += stored
    result.duplicates += len(rows) - stored


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


@dataclass
class Ingested:
    stored: Stored  # of the events that parsed; its `rejected` indices are already mapped into `rejected`
    rejected: dict[int, str] = field(default_factory=dict)  # index in the payloads -> reason, each kept as a row


def ingest(session: Session, settings: Settings, payloads: Sequence[Any], known: Mapping[int, str] | None = None,
           source: str = "event") -> Ingested:
    """Many per-event messages in the caller's ONE transaction (the per-event path's batch): each payload
    is parsed, the valid ones stored together (`store`: one INSERT, coalesced per model), and every one
    refused, here or by `store`, kept as an `event_rejected` row with its reason. `known` are refusals
    the caller already made (index -> reason; that payload is kept as given). A failure `store` does not
    foresee costs only its own event: the batch is then stored event by event, each in a savepoint, and
    the one that fails is rejected with the error. A transient database error propagates (retry it all)."""
    rejected = dict(known or {})
    batch: list[Event] = []
    positions: list[int] = []  # each batched event's index in payloads
    for i, payload in enumerate(payloads):
        if i in rejected:
            continue
        try:
            event = parse(payload)
            if isinstance(event, PurchaseEvent | PredictionEvent):
                settings.model(event.model)  # an unknown model is this event's problem, not the batch's
        except (InvalidEvent, LookupError) as exc:
            rejected[i] = str(exc)
            continue
        batch.append(event)
        positions.append(i)
    try:
        with session.begin_nested():
            result = store(session, settings, batch, source=source)  # type: ignore[arg-type]
    except TRANSIENT_ERRORS:
        raise
    except Exception:  # noqa: BLE001  (whatever it is, it must not take the batch's other events with it)
        result = _store_one_by_one(session, settings, batch, source)
    rejected |= {positions[k]: reason for k, reason in result.rejected}
    for i in sorted(rejected):
        reject(session, payloads[i], rejected[i])
    return Ingested(result, rejected)


def _store_one_by_one(session: Session, settings: Settings, batch: list[Event], source: str) -> Stored:
    out = Stored()
    for k, event in enumerate(batch):
        try:
            with session.begin_nested():
                one = store(session, settings, [event], source=source)  # type: ignore[list-item]
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001
            out.rejected.append((k, validation.storable(f"{type(exc).__name__}: {exc}"[:500])))
            continue
        out.stored += one.stored
        out.duplicates += one.duplicates
        out.coalesced += one.coalesced
        out.enqueue += one.enqueue
        out.suppressed |= one.suppressed
        out.rejected += [(k, reason) for _, reason in one.rejected]
    return out


def reject(session: Session, payload: Any, error: str) -> None:
    """Keep a bad event with the reason, so it is never silently lost: a storable, truncated text of
    the payload (NUL and lone surrogates escaped), whatever it is (any depth, size or type)."""
    error = validation.storable(error[:500])
    audit.record(session, "event_rejected", f"event rejected: {error}", payload=validation.preview(payload), error=error)
