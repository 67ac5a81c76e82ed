"""retrainer.services.events: validation, storage and coalescing into one pending retrain per model."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings, UnknownModel
from retrainer.db import session_scope
from retrainer.db.records import (
    Observation,
    PredictionRecord,
    PredictionStatus,
    RequestStatus,
    RetrainRequest,
    SystemEvent,
    Trigger,
)
from retrainer.demo import synthetic
from retrainer.services import events, observation_inserts, predictions, retrain_requests, validation
from retrainer.services.errors import InvalidEvent
from tests.faults.corpus import corpus
from tests.services.builders import END, START, count, make_version
from tests.support import make_settings, model_config

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
FEATURES = {"hook_strength": 0.4, "thumbnail_score": 0.7, "video_length_s": 20.0}


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def purchase(**overrides: Any) -> dict[str, Any]:
    return {"type": "purchase", "model": "ctr", "event_id": "e-1", "features": dict(FEATURES), "value": 0.031,
            "occurred_at": "2024-05-31T10:00:00+00:00"} | overrides


def purchases(n: int, prefix: str, model: str = "ctr") -> list[events.PurchaseEvent]:
    rows = synthetic.generate(n, START, END, seed=len(prefix) + n)
    return [events.parse(e) for e in synthetic.as_purchase_events(rows, model, prefix)]  # type: ignore[misc]


def requests(session: Session, model: str = "ctr") -> list[RetrainRequest]:
    session.flush()
    return list(session.scalars(sa.select(RetrainRequest).where(RetrainRequest.model == model)
                                .order_by(RetrainRequest.id)))


# --- parse ----------------------------------------------------------------------------------------

def test_parse_valid_events() -> None:
    p = events.parse(purchase())
    assert isinstance(p, events.PurchaseEvent)
    assert (p.model, p.event_id, p.value, p.features) == ("ctr", "e-1", 0.031, FEATURES)
    assert p.occurred_at == datetime(2024, 5, 31, 10, tzinfo=UTC)
    o = events.parse(json.dumps({"type": "outcome", "prediction_id": "pred-9", "value": 0.02}))
    assert isinstance(o, events.OutcomeEvent) and o.prediction_id == "pred-9"
    b = events.parse(json.dumps(purchase()).encode())
    assert isinstance(b, events.PurchaseEvent)


@pytest.mark.parametrize("payload,field", [
    ("{not json", "JSON"),
    (purchase(value="lots"), "value"),  # wrong type
    (purchase(features=[1, 2]), "features"),
    (purchase(model=""), "model"),
    ({k: v for k, v in purchase().items() if k != "value"}, "value"),  # missing field
    ({k: v for k, v in purchase().items() if k != "model"}, "model"),
    ({"type": "outcome", "value": 0.1}, "prediction_id"),
    (purchase(value=math.nan), "value"),  # NaN value
    (purchase(value=math.inf), "value"),
    ('{"type": "purchase", "model": "ctr", "features": {"a": 1}, "value": NaN}', "value"),
    (purchase(features={"hook_strength": math.nan}), "hook_strength"),
    (purchase(features={"nested": {"a": 1}}), "nested"),
    (purchase(colour="red"), "colour"),  # unknown extra field
    (purchase(type="refund"), "type"),
    ({"model": "ctr", "value": 1}, "type"),
    (purchase(event_id="x" * 65), "event_id"),
    (purchase(occurred_at="yesterday"), "occurred_at"),
    ("[1, 2, 3]", "event"),
])
def test_parse_rejects_naming_the_field(payload: Any, field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        events.parse(payload)
    assert field in str(info.value)


def test_oversized_events_are_refused() -> None:
    big = {f"f{i}": 0.123456789 for i in range(5000)}
    assert len(json.dumps(purchase(features=big))) > 64 * 1024
    with pytest.raises(InvalidEvent, match="65536"):
        events.parse(purchase(features=big))
    with pytest.raises(InvalidEvent, match="65536"):
        events.parse(json.dumps(purchase(features=big)))
    # the limit is in bytes: 40 000 two-byte characters are 80 000 bytes
    wide = json.dumps(purchase(features={"hook_strength": 1.0, "note": "é" * 40_000}), ensure_ascii=False)
    assert len(wide) < 64 * 1024 < len(wide.encode())
    with pytest.raises(InvalidEvent, match="bytes"):
        events.parse(wide)


def test_an_event_just_under_the_limits_is_accepted() -> None:
    """200 features of the longest name and string value fit in 64 KiB (one more does not); 500
    numeric features are allowed."""
    features = {f"{i:03d}".ljust(validation.MAX_NAME_CHARS, "n"): "v" * validation.MAX_TEXT_CHARS for i in range(200)}
    event = purchase(features=features)
    assert 65_000 < len(json.dumps(event, separators=(",", ":"))) <= validation.MAX_EVENT_BYTES
    assert events.parse(event).features == features
    assert events.parse(json.dumps(event, separators=(",", ":"))).features == features
    with pytest.raises(InvalidEvent, match="65536"):
        events.parse(purchase(features=features | {"one_more": "v" * validation.MAX_TEXT_CHARS}))
    many = {f"f{i}": 0.5 for i in range(validation.MAX_FEATURES)}
    assert len(events.parse(purchase(features=many)).features) == 500


@pytest.mark.parametrize("payload,message", [
    (purchase(value=True), "value: expected a number, got a boolean"),
    (purchase(value="0.031"), "value: expected a number, got string"),
    (purchase(value=1.7e308), "value: 1.7e+308 is outside ±1e15"),
    (purchase(features={"hook_strength": 10**400}), "features.hook_strength: integer outside ±1e15"),
    (purchase(occurred_at="9999-12-31T23:00:00-05:00"), "occurred_at: '9999-12-31T23:00:00-05:00' is outside"),
    (purchase(model="ctr\x00"), "model: contains a NUL character"),
    (purchase(event_id="e\ud800"), "event_id: contains a lone surrogate"),
    (purchase(features={"hook_strength": {"a": {"b": 1}}}), "features.hook_strength: nested deeper than 2 levels"),
    ({"type": "outcome", "prediction_id": "p\x00", "value": 0.1}, "prediction_id: contains a NUL character"),
])
def test_what_broke_step_one_is_refused_naming_the_field(payload: Any, message: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        events.parse(payload)
    assert str(info.value).startswith(message)


def test_document_is_validated_compact_json_with_an_event_id() -> None:
    sent = events.document({k: v for k, v in purchase().items() if k != "event_id"})
    doc = json.loads(sent)
    assert len(doc["event_id"]) == 32 and ": " not in sent
    assert events.parse(sent).features == FEATURES
    assert json.loads(events.document(json.dumps(purchase()).encode()))["event_id"] == "e-1"  # kept
    for bad in (purchase(value=math.nan), "[" * 5000, b"\xff"):
        with pytest.raises(InvalidEvent):
            events.document(bad)


def test_every_corpus_payload_is_parsed_or_refused_as_expected() -> None:
    """10,000 fuzzed payloads: parse raises nothing but InvalidEvent, refuses exactly what it should,
    and says which field."""
    wrong = []
    for payload, expected in corpus(10_000, seed=6):
        try:
            events.parse(payload)
            refused = None
        except InvalidEvent as exc:
            refused = str(exc)
            assert refused and "\n" not in refused and ": " in refused, refused
        if (refused is not None) != (expected.by == "parse"):
            wrong.append((expected, refused, validation.preview(payload, 120)))
    assert wrong == []


# --- store and coalesce ------------------------------------------------------------------------------

def test_a_storm_of_purchases_yields_one_retrain(settings: Settings, session: Session) -> None:
    result = events.store(session, settings, purchases(200, "storm"))
    assert result.stored == 200 and result.duplicates == 0
    assert len(result.enqueue) == 1
    job = result.enqueue[0]
    assert job.model == "ctr"
    assert job.countdown == settings.model("ctr").debounce_seconds
    assert result.coalesced == 199
    [req] = requests(session)
    assert req.id == job.request_id
    assert req.status == RequestStatus.PENDING
    assert req.event_count == 200
    assert req.trigger == Trigger.EVENT
    assert req.not_before == NOW + timedelta(seconds=settings.model("ctr").debounce_seconds)
    assert count(session, Observation, Observation.model == "ctr") == 200
    stored = session.scalars(sa.select(Observation).order_by(Observation.event_time)).all()
    assert stored[0].event_time == START and stored[0].source == "event"

    # a second batch inside the window joins the pending request
    again = events.store(session, settings, purchases(50, "storm2"))
    assert again.enqueue == [] and again.stored == 50 and again.coalesced == 50
    [req] = requests(session)
    assert req.event_count == 250


def test_an_event_during_a_run_schedules_exactly_one_follow_up(settings: Settings, session: Session) -> None:
    first = events.store(session, settings, purchases(3, "a"))
    [req] = requests(session)
    req.status = RequestStatus.PROCESSING  # the retrain started
    session.flush()
    follow = events.store(session, settings, purchases(1, "b"))
    assert len(follow.enqueue) == 1
    assert follow.enqueue[0].request_id != first.enqueue[0].request_id
    nothing_more = events.store(session, settings, purchases(1, "c"))
    assert nothing_more.enqueue == []
    rows = requests(session)
    assert [r.status for r in rows] == [RequestStatus.PROCESSING, RequestStatus.PENDING]
    assert rows[1].event_count == 2
    assert count(session, Observation) == 5


def test_duplicate_event_ids_are_stored_once(settings: Settings, session: Session) -> None:
    batch = [events.parse(purchase(event_id="dup")), events.parse(purchase(event_id="dup", value=0.5)),
             events.parse(purchase(event_id="other"))]
    result = events.store(session, settings, batch)
    assert (result.stored, result.duplicates) == (2, 1)
    again = events.store(session, settings, [events.parse(purchase(event_id="dup"))])
    assert (again.stored, again.duplicates) == (0, 1)
    assert count(session, Observation) == 2
    labels = session.scalars(sa.select(Observation.label).where(Observation.event_id == "dup")).all()
    assert labels == [pytest.approx(0.031)]  # the first delivery wins


def test_a_redelivered_batch_does_not_ask_for_another_retrain(settings: Settings, session: Session) -> None:
    batch = purchases(20, "redeliver")
    events.store(session, settings, batch)
    [req] = requests(session)
    req.status = RequestStatus.PROCESSING
    session.flush()
    # the broker hands the same message to a worker again: every event is a duplicate
    again = events.store(session, settings, batch)
    assert (again.stored, again.duplicates) == (0, 20)
    assert again.enqueue == []
    assert [r.status for r in requests(session)] == [RequestStatus.PROCESSING]


def test_outcome_for_unknown_prediction_is_rejected_and_the_rest_stored(settings: Settings, session: Session) -> None:
    predictions.log_prediction(session, "ctr", FEATURES, 0.03, prediction_id="known",
                               at=NOW - timedelta(hours=5))
    session.flush()
    batch = [
        events.parse({"type": "outcome", "prediction_id": "known", "value": 0.05, "event_id": "o-1"}),
        events.parse({"type": "outcome", "prediction_id": "ghost", "value": 0.05}),
        events.parse(purchase(event_id="p-1")),
    ]
    result = events.store(session, settings, batch)
    assert result.stored == 2
    assert len(result.rejected) == 1
    index, reason = result.rejected[0]
    assert index == 1 and "ghost" in reason
    rec = session.scalar(sa.select(PredictionRecord).where(PredictionRecord.prediction_id == "known"))
    assert rec.status == PredictionStatus.COMPLETED and rec.actual == pytest.approx(0.05)
    assert sorted(session.scalars(sa.select(Observation.event_id))) == ["outcome:known", "p-1"]
    assert len(result.enqueue) == 1  # the purchase asks for a retrain; outcomes alone do not


def test_outcomes_only_do_not_request_a_retrain(settings: Settings, session: Session) -> None:
    predictions.log_prediction(session, "ctr", FEATURES, 0.03, prediction_id="k2")
    session.flush()
    result = events.store(session, settings, [events.parse({"type": "outcome", "prediction_id": "k2", "value": 0.1})])
    assert result.stored == 1 and result.enqueue == []
    assert requests(session) == []


def test_unknown_model_stores_nothing(settings: Settings, session: Session) -> None:
    predictions.log_prediction(session, "ctr", FEATURES, 0.03, prediction_id="k3")
    session.flush()
    batch = [events.parse(purchase(event_id="ok")),
             events.parse({"type": "outcome", "prediction_id": "k3", "value": 0.1}),
             events.parse(purchase(event_id="bad", model="churn"))]
    with pytest.raises(UnknownModel) as info:
        events.store(session, settings, batch)
    assert "churn" in str(info.value)
    session.flush()
    assert count(session, Observation) == 0
    assert requests(session) == []
    assert session.scalar(sa.select(PredictionRecord.status)) == PredictionStatus.PREDICTED


def test_one_request_per_model(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(), "roas": model_config(debounce_seconds=30)})
    with session_scope(db_url) as s:
        result = events.store(s, settings, purchases(5, "c") + purchases(7, "r", model="roas"))
        jobs = {j.model: j for j in result.enqueue}
        assert set(jobs) == {"ctr", "roas"}
        assert jobs["roas"].countdown == 30
        assert {r.model: r.event_count for r in s.scalars(sa.select(RetrainRequest))} == {"ctr": 5, "roas": 7}


def test_coalesce_for_a_check_runs_now(settings: Settings, session: Session) -> None:
    job = retrain_requests.coalesce(session, settings, "ctr", trigger=Trigger.ACCURACY, requested_by="check", window=0)
    assert job is not None and job.countdown == 0
    assert retrain_requests.coalesce(session, settings, "ctr", trigger=Trigger.ACCURACY, requested_by="check", window=0) is None
    [req] = requests(session)
    assert req.trigger == Trigger.ACCURACY and req.event_count == 2 and req.requested_by == "check"


def test_batch_limit(settings: Settings, session: Session) -> None:
    one = events.parse(purchase())
    with pytest.raises(InvalidEvent, match=str(events.MAX_BATCH)):
        events.store(session, settings, [one] * (events.MAX_BATCH + 1))
    session.flush()
    assert count(session, Observation) == 0


def test_reject_keeps_the_bad_event(session: Session) -> None:
    events.reject(session, "{broken", "event is not valid JSON")
    events.reject(session, {"type": "purchase", "value": "x" * 5000}, "value: not a number")
    session.flush()
    rows = session.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "event_rejected")
                           .order_by(SystemEvent.id)).all()
    assert len(rows) == 2
    assert rows[0].payload == {"payload": "{broken", "error": "event is not valid JSON"}
    assert len(rows[1].payload["payload"]) == 2000
    assert "not a number" in rows[1].message


def test_concurrent_batches_share_one_pending_request(settings: Settings) -> None:
    """Two producers store at the same time: the partial unique index makes the second join the first."""
    url = settings.database_url
    outcome: dict[str, Any] = {}

    def second_producer() -> None:
        try:
            with session_scope(url) as s:
                outcome["second"] = events.store(s, settings, purchases(30, "second"))
        except BaseException as exc:  # noqa: BLE001  (reported to the main thread)
            outcome["second"] = exc

    with session_scope(url) as s:
        first = events.store(s, settings, purchases(20, "first"))
        racer = threading.Thread(target=second_producer)
        racer.start()
        racer.join(1.0)
        assert racer.is_alive(), "the second producer did not wait for the first transaction"
    racer.join(30)
    second = outcome["second"]
    assert isinstance(second, events.Stored), second
    assert len(first.enqueue) == 1 and second.enqueue == []
    assert second.stored == 30
    with session_scope(url) as s:
        [req] = requests(s)
        assert req.status == RequestStatus.PENDING and req.event_count == 50
        assert count(s, Observation) == 50


def test_parse_keeps_a_boolean_feature_as_a_boolean_but_refuses_a_boolean_value() -> None:
    event = events.parse({"type": "purchase", "model": "ctr", "features": {"flag": True}, "value": 0.1})
    assert event.features == {"flag": True} and event.features["flag"] is True
    with pytest.raises(InvalidEvent, match=r"^value: expected a number, got a boolean"):
        events.parse({"type": "purchase", "model": "ctr", "features": {"flag": True}, "value": True})


# --- bad input never costs its neighbours, and is never lost ------------------------------------------

def test_a_batch_keeps_its_good_events_whatever_the_bad_ones_are(settings: Settings, session: Session) -> None:
    """5,000 good events and, among them, NUL bytes, lone surrogates and a deep event (the batch path:
    parse each, store the good): the 5,000 land, each bad one is reported by its index."""
    raw: list[Any] = [dict(e) for e in synthetic.as_purchase_events(synthetic.generate(5000, START, END, seed=3), "ctr", "b")]
    deep: Any = 0.5
    for _ in range(5000):
        deep = {"a": deep}
    bad = {17: purchase(event_id="nul", model="ctr\x00"), 2500: purchase(event_id="sur", features={"h\ud800": 1.0}),
           4000: purchase(event_id="deep", features={"hook_strength": deep}), 4999: json.dumps(purchase(event_id="x\ud800"))}
    for index, payload in sorted(bad.items()):
        raw.insert(index, payload)
    parsed, refused = [], {}
    for i, payload in enumerate(raw):
        try:
            parsed.append(events.parse(payload))
        except InvalidEvent as exc:
            refused[i] = str(exc)
    result = events.store(session, settings, parsed)
    assert (result.stored, result.rejected) == (5000, [])
    assert sorted(refused) == sorted(bad)
    assert refused[17].startswith("model: contains a NUL") and refused[2500].startswith("features: name 'h\\ud800'")
    assert refused[4000].startswith("features.hook_strength: nested deeper")
    assert refused[4999].startswith("event_id: contains a lone surrogate")
    assert count(session, Observation) == 5000


def test_a_row_the_database_refuses_costs_only_itself(settings: Settings, session: Session) -> None:
    """The safety net under validation: events built without parse (so nothing checked them). The
    chunk's INSERT fails, the chunk is stored row by row, and only the refused rows are reported."""
    good = purchases(2000, "net")
    broken = [events.PurchaseEvent("ctr", dict(FEATURES), 0.03, event_id="bad\ud800")]  # no UTF-8 encoding
    if session.get_bind().dialect.name == "postgresql":  # SQLite stores a NUL; JSONB refuses it
        broken.append(events.PurchaseEvent("ctr", {"hook_type": "a\x00"}, 0.03, event_id="nul"))
    batch = good[:1000] + broken[:1] + good[1000:] + broken[1:]
    result = events.store(session, settings, batch)
    assert result.stored == 2000 and result.duplicates == 0
    assert [i for i, _ in result.rejected] == [1000, 2001][: len(broken)]
    assert all(reason.startswith("the database refused it: ") for _, reason in result.rejected)
    assert count(session, Observation) == 2000
    assert len(result.enqueue) == 1


def test_a_transient_database_error_is_not_taken_for_bad_data(settings: Settings, session: Session,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def outage(*_: Any, **__: Any) -> Any:
        raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(observation_inserts, "_insert_ignoring_duplicates", outage)
    with pytest.raises(sa.exc.OperationalError):
        events.store(session, settings, purchases(5, "outage"))


def test_reject_stores_every_corpus_payload(settings: Settings, session: Session) -> None:
    """Whatever arrived (deep, huge, NUL, surrogates, bytes, not JSON at all), its rejection is stored
    with the reason, on SQLite and on PostgreSQL (JSONB)."""
    entries = corpus(10_000, seed=8)
    for payload, expected in entries:
        events.reject(session, payload, f"{expected.category}: refused \x00\ud800")
    session.flush()
    rows = session.execute(sa.select(SystemEvent.message, SystemEvent.payload)
                           .where(SystemEvent.kind == "event_rejected")).all()
    assert len(rows) == len(entries)
    for message, stored in rows:
        assert message.endswith("refused \\x00\\ud800") and stored["error"] in message
        assert isinstance(stored["payload"], str) and len(stored["payload"]) <= validation.PREVIEW_CHARS


def test_reject_keeps_a_readable_preview_of_what_cannot_be_stored(session: Session) -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    events.reject(session, {"model": "ctr\x00", "features": {"k\ud800": deep}}, "model: contains a NUL character")
    events.reject(session, b"\xff\xfe" + b"x" * 10**6, "event: not valid UTF-8 (byte 0)")
    session.flush()
    first, second = session.scalars(sa.select(SystemEvent.payload).where(SystemEvent.kind == "event_rejected")
                                    .order_by(SystemEvent.id)).all()
    assert first["payload"].startswith('{"model": "ctr\\u0000", "features": {"k\\ud800": [[[[')
    assert len(first["payload"]) == 2000
    assert second["payload"].startswith("\\xff\\xfexxx") and len(second["payload"]) == 2000


# --- prediction events: a serving stack elsewhere logs its predictions ---------------------------

def prediction(**overrides: Any) -> dict[str, Any]:
    return {"type": "prediction", "model": "ctr", "features": FEATURES, "predicted": 0.031} | overrides


def test_prediction_event_parses_every_field() -> None:
    event = events.parse(prediction(prediction_id="srv-1", version_id="ext-7", confidence=0.9,
                                    segments={"region": "eu"}, occurred_at="2024-06-01T11:00:00Z", event_id="e-1"))
    assert isinstance(event, events.PredictionEvent)
    assert (event.prediction_id, event.version_id, event.confidence, event.segments, event.predicted) == (
        "srv-1", "ext-7", 0.9, {"region": "eu"}, 0.031)
    assert event.occurred_at == datetime(2024, 6, 1, 11, tzinfo=UTC)
    assert events.parse(prediction(proba={"0": 0.2, "1": 0.8}, predicted=1)).proba == {"0": 0.2, "1": 0.8}


@pytest.mark.parametrize("doc,message", [
    (prediction(predicted="0.3"), "predicted: expected a number, got string"),
    ({"type": "prediction", "model": "ctr", "features": FEATURES}, "predicted: missing"),
    (prediction(value=0.1), "'value': unknown field"),
    (prediction(segments={"k": "v" * 65}), "segments.k: 65 characters"),
    (prediction(proba={"1": 2.0}), "proba.1: a probability is between 0 and 1"),
    (prediction(confidence=True), "confidence: expected a number, got a boolean"),
])
def test_bad_prediction_events_are_refused_naming_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        events.parse(doc)
    assert str(info.value).startswith(message) or message in str(info.value)


def test_prediction_events_are_logged_and_duplicates_are_no_ops(settings: Settings, session: Session) -> None:
    batch = [events.parse(prediction(prediction_id="srv-1", segments={"region": "eu"}, version_id="ext-7",
                                     occurred_at=(NOW - timedelta(hours=2)).isoformat())),
             events.parse(prediction(event_id="e-2")),  # no prediction_id: the event id names it
             events.parse(prediction(prediction_id="srv-1", predicted=0.9))]  # re-sent: a no-op
    result = events.store(session, settings, batch)
    assert (result.stored, result.duplicates, result.rejected, result.enqueue) == (2, 1, [], [])
    again = events.store(session, settings, batch[:2])
    assert (again.stored, again.duplicates) == (0, 2)
    rows = {r.prediction_id: r for r in session.scalars(sa.select(PredictionRecord))}
    assert sorted(rows) == ["e-2", "srv-1"]
    first = rows["srv-1"]
    assert (first.predicted, first.segments, first.version_id, first.status) == (
        0.031, {"region": "eu"}, "ext-7", PredictionStatus.PREDICTED)
    assert first.predicted_at == NOW - timedelta(hours=2)
    assert count(session, Observation) == 0 and requests(session) == []  # not a labelled row: no retrain


def test_an_outcome_completes_a_prediction_logged_by_event(settings: Settings, session: Session) -> None:
    batch = [events.parse(prediction(prediction_id="srv-9")),
             events.parse({"type": "outcome", "prediction_id": "srv-9", "value": 0.041})]  # same batch
    result = events.store(session, settings, batch)
    assert result.stored == 2 and result.rejected == []
    rec = session.scalar(sa.select(PredictionRecord).where(PredictionRecord.prediction_id == "srv-9"))
    assert rec.status == PredictionStatus.COMPLETED and rec.error == pytest.approx(0.01)
    assert session.scalar(sa.select(Observation.event_id)) == "outcome:srv-9"


def test_a_classifier_prediction_event_keeps_its_probabilities(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(), "churn": model_config(family="classifier")})
    with session_scope(db_url) as session:
        result = events.store(session, settings, [
            events.parse(prediction(model="churn", predicted=1, proba={"0": 0.3, "1": 0.7}, prediction_id="c-1")),
            events.parse(prediction(model="churn", predicted=0.5, prediction_id="c-2")),  # no class
            events.parse(prediction(model="nope", prediction_id="c-3")),
            events.parse({"type": "outcome", "prediction_id": "c-1", "value": 0}),
        ])
        assert result.stored == 2
        assert [i for i, _ in result.rejected] == [1, 2]
        assert "a class is a whole number" in result.rejected[0][1] and "nope" in result.rejected[1][1]
        rec = session.scalar(sa.select(PredictionRecord).where(PredictionRecord.prediction_id == "c-1"))
        assert (rec.proba, rec.kind.value, rec.error) == ({"0": 0.3, "1": 0.7}, "classification", 1.0)


# --- the production schema at ingestion ------------------------------------------------------------

SCHEMA = {"features": [{"name": "hook_strength", "type": "numeric"},
                       {"name": "hook_type", "type": "categorical", "categories": ["question"]},
                       {"name": "trial", "type": "boolean"}], "source": "configured", "left_out": {}}


def test_purchases_that_do_not_fit_the_production_schema_are_rejected_naming_the_feature(
        settings: Settings, session: Session) -> None:
    # an unseen category and a key the schema lacks are fine
    good = {"hook_strength": 0.4, "hook_type": "list", "trial": False, "new_key": 1}
    batch = [events.parse(purchase(event_id=f"s-{i}", features=f)) for i, f in enumerate([
        good,
        {"hook_type": "list", "trial": False},
        good | {"hook_strength": "0.4"},
        good | {"trial": 1},
        good | {"hook_type": 3},
    ])]
    before = events.store(session, settings, batch)  # no production version yet: nothing to check against
    assert before.stored == 5 and before.rejected == []
    make_version(session, settings, 1, production=True, feature_schema=SCHEMA)
    again = [events.parse(purchase(event_id=f"t-{i}", features=e.features)) for i, e in enumerate(batch)]
    after = events.store(session, settings, again)
    assert after.stored == 1
    assert after.rejected == [
        (1, "features.hook_strength: missing (the production schema needs it)"),
        (2, "features.hook_strength: expected a number (numeric), got string"),
        (3, "features.trial: expected a boolean (boolean), got integer"),
        (4, "features.hook_type: expected a string (categorical), got integer"),
    ]
    assert count(session, Observation, Observation.event_id.like("t-%")) == 1


def test_empty_features_only_for_a_family_that_reads_the_time(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(), "timing": model_config(family="timing")})
    with session_scope(db_url) as s:
        result = events.store(s, settings, [events.parse(purchase(event_id="a", features={})),
                                            events.parse(purchase(event_id="b", model="timing", features={}))])
        assert result.stored == 1
        assert result.rejected == [(0, "features: empty; model 'ctr' needs at least one feature")]
        assert s.scalar(sa.select(Observation.model)) == "timing"


def test_store_without_coalescing_asks_for_no_retrain(settings: Settings, session: Session) -> None:
    result = events.store(session, settings, purchases(5, "quiet"), coalesce=False)
    assert result.stored == 5 and result.enqueue == [] and requests(session) == []


def rejections(session: Session) -> list[SystemEvent]:
    session.flush()
    return list(session.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "event_rejected")
                                .order_by(SystemEvent.id)))


def test_ingest_stores_a_batch_of_messages_and_keeps_each_refusal(settings: Settings, session: Session) -> None:
    """The per-event path's batch: JSON documents (and older producers' dicts) stored in one INSERT and
    coalesced once; each bad one, whatever refused it, is kept as a row with its reason."""
    documents: list[Any] = [json.dumps(e) for e in synthetic.as_purchase_events(
        synthetic.generate(300, START, END, seed=4), "ctr", "ing")]
    documents[10] = "not json"
    documents[20] = purchase(event_id="no-model", model="nope")  # valid; no such model
    documents[30] = {"type": "outcome", "prediction_id": "p-missing", "value": 0.1}  # refused by the store
    documents.append(documents[0])  # a re-delivery in the same batch
    out = events.ingest(session, settings, documents, known={40: "event: too deep (said by the worker)"})
    assert (out.stored.stored, out.stored.duplicates) == (296, 1)
    assert sorted(out.rejected) == [10, 20, 30, 40]
    assert out.rejected[40] == "event: too deep (said by the worker)"
    assert out.rejected[20].startswith("unknown model 'nope'") and "p-missing" in out.rejected[30]
    assert [r.payload["error"] for r in rejections(session)] == [out.rejected[i] for i in (10, 20, 30, 40)]
    assert count(session, Observation) == 296
    (request,) = requests(session)
    assert request.event_count == 296 and len(out.stored.enqueue) == 1


def test_ingest_a_failure_store_does_not_foresee_costs_only_its_event(
    settings: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_store = events.store

    def store_choking_on_one(session: Session, settings: Settings, batch: list[Any], **kwargs: Any) -> Any:
        if any(e.event_id == "choke" for e in batch):
            raise KeyError("a bug")
        return real_store(session, settings, batch, **kwargs)

    monkeypatch.setattr(events, "store", store_choking_on_one)
    documents = [json.dumps(purchase(event_id=f"ok-{i}")) for i in range(5)]
    documents.insert(2, json.dumps(purchase(event_id="choke")))
    out = events.ingest(session, settings, documents)
    assert out.stored.stored == 5 and out.rejected == {2: "KeyError: 'a bug'"}
    assert [r.payload["error"] for r in rejections(session)] == ["KeyError: 'a bug'"]
    assert requests(session)[0].event_count == 5


def test_ingest_lets_a_transient_error_through_to_be_retried(
    settings: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def outage(*_: Any, **__: Any) -> Any:
        raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(observation_inserts, "_insert_ignoring_duplicates", outage)
    with pytest.raises(sa.exc.OperationalError):
        events.ingest(session, settings, [json.dumps(purchase())])


def test_second_targets_travel_with_prediction_and_outcome_events(session: Session, settings: Settings) -> None:
    stored = events.store(session, settings, [
        events.parse({"type": "prediction", "model": "ctr", "event_id": "p1", "features": {"hook_strength": 0.5},
                      "predicted": 0.03, "targets": {"roas": 2.5}}),
        events.parse({"type": "outcome", "prediction_id": "p1", "value": 0.04, "targets": {"roas": 2.0}}),
        events.parse({"type": "outcome", "prediction_id": "p1", "value": 0.04, "targets": {"cpa": 3.0}}),
    ])
    assert stored.stored == 2 and [i for i, _ in stored.rejected] == [2]  # a target it was not served with
    assert "targets: 'cpa' not served with prediction 'p1'" in stored.rejected[0][1]
    record = session.scalar(sa.select(PredictionRecord).where(PredictionRecord.prediction_id == "p1"))
    assert record.targets == {"roas": {"predicted": 2.5, "actual": 2.0}}
    with pytest.raises(InvalidEvent, match="targets: expected an object of name -> number"):
        events.parse({"type": "outcome", "prediction_id": "p1", "value": 1, "targets": [1]})
