"""Producer events stored: a parsed batch (services/event_parsing.py) lands in the caller's
transaction, purchases as observations (services/observation_inserts.py), then coalesced into at
most one pending retrain per model (services/retrain_requests.py); `ingest` parses and stores the
per-event path's messages, and `reject` keeps every refused one with its reason.

`parse`, `document` and the event types are re-exported here: producers and tests use them as
`events.parse` and so on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db import TRANSIENT_ERRORS
from retrainer.db.records import Feedback, PredictionRecord
from retrainer.services import audit, live_rollup, predictions, retrain_requests, validation
from retrainer.services.controls import Suppressed
from retrainer.services.errors import InvalidEvent, PredictionNotFound
from retrainer.services.event_parsing import (
    Event,
    FeedbackEvent,
    OutcomeEvent,
    PredictionEvent,
    PurchaseEvent,
    document,
    parse,
)
from retrainer.services.observation_inserts import DATA_ERRORS, insert_rows, refusal_reason
from retrainer.services.retrain_requests import Enqueue

__all__ = [  # what other modules and tests use; the parsing names live in services/event_parsing.py
    "MAX_BATCH", "Event", "FeedbackEvent", "Ingested", "OutcomeEvent", "PredictionEvent", "PurchaseEvent",
    "Stored", "document", "ingest", "parse", "reject", "store",
]

MAX_BATCH = 10_000


@dataclass
class Stored:
    stored: int = 0
    duplicates: int = 0
    coalesced: int = 0
    enqueue: list[Enqueue] = field(default_factory=list)
    suppressed: dict[str, str] = field(default_factory=dict)  # model -> why its retrain was not asked for
    rejected: list[tuple[int, str]] = field(default_factory=list)


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
    inserted, failed = insert_rows(session, rows)
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
                result.rejected.append((i, refusal_reason(exc)))
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
            result.rejected.append((i, refusal_reason(exc)))


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
        result.rejected += [(i, refusal_reason(exc)) for i in positions]
        return
    result.stored += stored
    result.duplicates += len(rows) - stored


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
