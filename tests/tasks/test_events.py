"""events.ingest_event and the batch path on real workers (Redis broker, PostgreSQL): coalescing,
follow-ups, and bad input that must be kept with its reason and never break the worker."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kombu.exceptions import EncodeError

from retrainer.db import session_scope
from retrainer.db.records import (
    ModelVersion,
    Observation,
    PredictionRecord,
    PredictionStatus,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
    Trigger,
)
from retrainer.demo import synthetic
from retrainer.models.base import Live
from retrainer.services import accuracy, events
from retrainer.services.errors import InvalidEvent
from retrainer.tasks.enqueue import send_retrain
from retrainer.tasks.producer import publish_events, send_event
from tests.faults.corpus import CATEGORIES, corpus
from tests.support import Worker, make_settings, model_config, wait_until
from tests.tasks.helpers import SLOW_PARAMS, count, purchase, rows, seed_observations

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]

_RECEIVED = re.compile(r"Task training\.retrain_model\[([0-9a-f-]{36})\] received")


def retrain_task_ids(*workers: Worker) -> set[str]:
    """Distinct retrain messages the workers took (a retried message keeps its id)."""
    return {m for w in workers for m in _RECEIVED.findall(w.output())}


def test_event_storm_coalesces_into_one_retrain_and_one_follow_up(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url,
                             models={"ctr": model_config(params=SLOW_PARAMS, debounce_seconds=2)})
    seed_observations(pg_url, 8000)  # enough rows that the fit takes a couple of seconds
    app = make_celery(settings)
    ingest = start_worker(settings, queues="events", concurrency=2)

    # 1 the storm: 200 purchases, one Celery message each
    for i in range(200):
        send_event(purchase(seed=i, event_id=f"storm-{i}"), via=app)
    wait_until(lambda: count(pg_url, Observation, Observation.source == "event") == 200, timeout=90,
               what="200 stored purchases")
    (request,) = rows(pg_url, RetrainRequest)
    assert request.status == RequestStatus.PENDING
    assert request.event_count == 200
    assert request.trigger == Trigger.EVENT
    assert (request.not_before - request.created_at) == timedelta(seconds=2)
    assert count(pg_url, SystemEvent, SystemEvent.kind == "event_rejected") == 0

    # The training worker starts once the storm is stored, so the whole storm is inside one window
    # however slowly this machine ingests; the one retrain message waited on the broker meanwhile.
    trainer = start_worker(settings, queues="training,notifications", concurrency=1)
    wait_until(lambda: rows(pg_url, TrainingRun, TrainingRun.status == RunStatus.RUNNING), timeout=60,
               what="the storm's retrain to start")

    # 2 events while that retrain runs: exactly one follow-up request and run
    for i in range(20):
        send_event(purchase(seed=1000 + i, event_id=f"during-{i}"), via=app)
    wait_until(lambda: count(pg_url, Observation, Observation.source == "event") == 220, timeout=60,
               what="20 more stored purchases")
    wait_until(lambda: count(pg_url, TrainingRun, TrainingRun.status == RunStatus.COMPLETED) == 2, timeout=180,
               what="the retrain and its follow-up to complete")
    wait_until(lambda: count(pg_url, SystemEvent, SystemEvent.kind == "notification") == 2, timeout=60,
               what="two notifications")

    first, follow_up = rows(pg_url, RetrainRequest, order_by=RetrainRequest.id)
    assert count(pg_url, RetrainRequest) == 2
    runs = rows(pg_url, TrainingRun, order_by=TrainingRun.started_at)
    assert [r.status for r in runs] == [RunStatus.COMPLETED, RunStatus.COMPLETED]
    run1, run2 = runs

    assert first.status == RequestStatus.COMPLETED and first.run_id == run1.run_id
    assert run1.request_id == first.id and run1.trigger == Trigger.EVENT
    assert run1.started_at >= first.not_before  # the debounce window was honoured
    assert run1.dataset_size == 8200  # every storm event was in the data

    assert follow_up.status == RequestStatus.COMPLETED and follow_up.run_id == run2.run_id
    assert follow_up.event_count == 20
    assert follow_up.created_at < run1.completed_at  # it arrived while the first run was running
    assert run2.request_id == follow_up.id
    assert run2.started_at >= run1.completed_at
    assert run2.dataset_size == 8220

    assert count(pg_url, RetrainRequest, RetrainRequest.status == RequestStatus.PENDING) == 0
    # One message per window, not one per event; the follow-up's may be sent again when the first run
    # ends (tasks/training.py _after_run), and that copy exits on its taken request: 2 runs, above.
    assert len(retrain_task_ids(ingest, trainer)) in (2, 3)
    assert ingest.alive() and trainer.alive()


def test_batch_path_stores_everything_and_enqueues_one_retrain_per_model(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    names = ("ctr", "ctr_b", "ctr_c")
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url,
                             models={name: model_config(debounce_seconds=1) for name in names})
    app = make_celery(settings)
    worker = start_worker(settings, queues="training,notifications", concurrency=2)

    end = datetime.now(UTC) - timedelta(minutes=5)
    batch = []
    for k, name in enumerate(names):
        generated = synthetic.generate(1667 if k < 2 else 1666, end - timedelta(days=20), end, seed=k)
        batch += synthetic.as_purchase_events(generated, name, prefix=f"batch-{name}")
    assert len(batch) == 5000

    published = publish_events(batch, settings=settings, via=app)

    assert published.stored == 5000
    assert published.duplicates == 0
    assert published.rejected == []
    assert published.retrains_enqueued == 3
    assert count(pg_url, Observation, Observation.source == "batch") == 5000
    requests = rows(pg_url, RetrainRequest, order_by=RetrainRequest.model)
    assert [(r.model, r.event_count) for r in requests] == [("ctr", 1667), ("ctr_b", 1667), ("ctr_c", 1666)]

    wait_until(lambda: count(pg_url, TrainingRun, TrainingRun.status == RunStatus.COMPLETED) == 3, timeout=120,
               what="three retrains")
    runs = rows(pg_url, TrainingRun, order_by=TrainingRun.model)
    assert [(r.model, r.outcome, r.trigger) for r in runs] == [(n, "retrained", Trigger.EVENT) for n in names]
    assert sorted(v.model for v in rows(pg_url, ModelVersion, ModelVersion.is_production)) == list(names)
    assert all(r.status == RequestStatus.COMPLETED for r in rows(pg_url, RetrainRequest))
    assert len(retrain_task_ids(worker)) == 3

    # the same events again (a producer retry): nothing stored twice; bad ones come back by index
    retry = batch[:100]
    retry.insert(10, {"type": "outcome", "prediction_id": "p-unknown", "value": 0.1})
    retry.insert(50, {"type": "purchase", "model": "ctr"})
    again = publish_events(retry, settings=settings, via=app)
    assert (again.stored, again.duplicates, again.retrains_enqueued) == (0, 100, 0)
    assert [r["index"] for r in again.rejected] == [10, 50]
    assert "p-unknown" in again.rejected[0]["error"] and again.rejected[1]["error"].startswith("features: missing")
    assert count(pg_url, Observation) == 5000


def test_prediction_events_on_both_paths_then_their_outcomes(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    """A serving stack elsewhere logs its predictions (one message each, and in a batch); re-sent
    ones are no-ops; their outcomes then complete them, and live accuracy sees them."""
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url,
                             models={"ctr": model_config(), "churn": model_config(family="classifier")})
    app = make_celery(settings)
    start_worker(settings, queues="events", concurrency=2)
    served = (datetime.now(UTC) - timedelta(hours=3)).isoformat()

    def prediction(pid: str, **fields: Any) -> dict[str, Any]:
        return {"type": "prediction", "model": "ctr", "features": {"hook_strength": 0.5}, "predicted": 0.03,
                "prediction_id": pid, "segments": {"region": "eu"}, "occurred_at": served} | fields

    for i in range(5):
        send_event(prediction(f"single-{i}"), via=app)
    send_event(prediction("single-0", predicted=0.9), via=app)  # the same prediction again: a no-op
    sent = send_event({k: v for k, v in prediction("x").items() if k != "prediction_id"}, via=app)
    published = publish_events(
        [prediction(f"batch-{i}", version_id="ext-v3") for i in range(5)]
        + [prediction("batch-0"), prediction("c-1", model="churn", predicted=1, proba={"0": 0.2, "1": 0.8})],
        settings=settings, via=app)
    assert (published.stored, published.duplicates, published.rejected) == (6, 1, [])
    wait_until(lambda: count(pg_url, PredictionRecord) == 12, timeout=60, what="12 logged predictions")
    time.sleep(1)  # the duplicate message had its chance
    logged = {r.prediction_id: r for r in rows(pg_url, PredictionRecord)}
    assert len(logged) == 12 and sent.event_id in logged  # no prediction_id: the event id names it
    assert logged["single-0"].predicted == pytest.approx(0.03)
    assert logged["batch-1"].version_id == "ext-v3" and logged["batch-1"].segments == {"region": "eu"}
    assert logged["c-1"].proba == {"0": 0.2, "1": 0.8}

    for i in range(5):
        send_event({"type": "outcome", "prediction_id": f"single-{i}", "value": 0.04}, via=app)
    publish_events([{"type": "outcome", "prediction_id": f"batch-{i}", "value": 0.05} for i in range(5)]
                   + [{"type": "outcome", "prediction_id": "c-1", "value": 0}], settings=settings, via=app)
    wait_until(lambda: count(pg_url, PredictionRecord, PredictionRecord.status == PredictionStatus.COMPLETED) == 11,
               timeout=60, what="11 completed predictions")
    done = {r.prediction_id: r for r in rows(pg_url, PredictionRecord)}
    assert done["single-3"].error == pytest.approx(0.01) and done["batch-3"].error == pytest.approx(0.02)
    assert done["c-1"].error == 1.0  # the wrong class
    with session_scope(pg_url) as session:
        parts = accuracy.breakdown(session, "ctr", by="region", kind=Live.REGRESSION)
    assert parts["eu"].count == 10 and parts["eu"]["mae"] == pytest.approx(0.015)
    assert count(pg_url, SystemEvent, SystemEvent.kind == "event_rejected") == 0


def deep(levels: int) -> dict[str, Any]:
    event: dict[str, Any] = purchase()
    for _ in range(levels):
        event = {"a": event}
    return event


def trouble(worker: Worker) -> list[str]:
    """What a worker must never log: a crash of its own or of a pool child."""
    log = worker.output()
    return [word for word in ("RecursionError", "Unrecoverable error", "WorkerLostError", "exited with", "Traceback")
            if word in log]


def test_bad_events_are_rejected_with_reasons_and_the_worker_keeps_working(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    seed_observations(pg_url, 600)
    app = make_celery(settings)
    worker = start_worker(settings, concurrency=1)

    good = purchase()
    # send_event refuses bad input on the producer's side: nothing is sent
    for payload in (["purchase", 1], good | {"value": True}, good | {"value": "0.5"}, deep(475)):
        with pytest.raises(InvalidEvent):
            send_event(payload, via=app)

    # a raw producer that bypasses send_event: the worker rejects, with the reason, and survives
    bad = {
        "not a dict": (["purchase", 1], "event: expected a JSON object, got array"),
        "not JSON": ("hello", "event: not valid JSON"),
        "missing fields": ({"type": "purchase", "model": "ctr"}, "features: missing"),
        "unknown type": ({"type": "refund", "value": 1.0}, "type: expected 'purchase', 'outcome', 'prediction' or 'feedback', got 'refund'"),
        # kombu's JSON carries NaN through as the bare token NaN and decodes it to float nan
        "NaN value": (good | {"value": float("nan")}, "value: nan is not a finite number"),
        "NaN feature": (good | {"features": {"hook_strength": float("nan")}}, "features.hook_strength: nan is not"),
        "oversized": (good | {"features": {"blob": "x" * (70 * 1024)}}, "event: larger than the limit of 65536 bytes"),
        "bool value": (good | {"value": True}, "value: expected a number, got a boolean"),
        "year 10000": (good | {"occurred_at": "9999-12-31T23:00:00-05:00"}, "occurred_at: '9999-12-31T23:00:00-05:00'"),
        "huge int": (good | {"features": {"hook_strength": 10**400}}, "features.hook_strength: integer outside ±1e15"),
        "NUL": (good | {"model": "ctr\x00"}, "model: contains a NUL character"),
        "surrogate": (good | {"features": {"k\ud800": 1.0}}, "features: name 'k\\ud800': contains a lone surrogate"),
        "475 levels deep": (deep(475), "a.a: nested deeper than 2 levels"),  # killed step 1's worker
        "deep text": ("[" * 5000 + "]" * 5000, "event: nested deeper than 2 levels"),
        "invalid UTF-8": (b"\xff" + json.dumps(good).encode(), "event: not valid UTF-8 (byte 0)"),  # kombu: base64
    }
    for payload, _ in bad.values():
        app.send_task("events.ingest_event", args=[payload], queue="events")
    app.send_task("events.ingest_event", args=[good, good], queue="events")  # not one event
    app.send_task("events.ingest_event", kwargs={"payload": good | {"value": "0.5"}}, queue="events")
    # valid events the worker cannot store: kept with the reason too
    send_event(good | {"model": "no-such-model"}, via=app)
    send_event({"type": "outcome", "prediction_id": "p-missing", "value": 0.1}, via=app)
    expected = [reason for _, reason in bad.values()] + [
        "event: the message's arguments are not one event", "value: expected a number, got string",
        "unknown model 'no-such-model'", "prediction 'p-missing' not found"]
    wait_until(lambda: count(pg_url, SystemEvent, SystemEvent.kind == "event_rejected") == len(expected), timeout=60,
               what=f"{len(expected)} rejected events")

    rejected = rows(pg_url, SystemEvent, SystemEvent.kind == "event_rejected", order_by=SystemEvent.id)
    errors = [r.payload["error"] for r in rejected]
    for reason in expected:
        assert sum(e.startswith(reason) or reason in e for e in errors) == 1, f"no single rejection saying {reason!r} in {errors}"
    for event in rejected:
        assert event.payload["error"] in event.message
        assert 0 < len(event.payload["payload"]) <= 2000  # kept (truncated) for whoever fixes the producer
    assert count(pg_url, Observation, Observation.source != "seed") == 0
    assert count(pg_url, RetrainRequest) == 0

    # the same worker still stores a good event and completes a normal retrain
    assert worker.alive() and trouble(worker) == []
    send_event(good | {"event_id": f"good-{uuid.uuid4().hex[:8]}"}, via=app)
    wait_until(lambda: count(pg_url, Observation, Observation.source == "event") == 1, timeout=30,
               what="the good event")
    result = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert result["status"] in ("retrained", "kept"), result
    assert count(pg_url, ModelVersion, ModelVersion.is_production) == 1
    assert worker.alive()


def test_a_fuzz_corpus_through_a_real_worker(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    """300 fuzzed events, every category: what send_event refuses is also sent raw. 0 worker deaths,
    every refusal kept with its reason, every valid event stored once, and a retrain afterwards."""
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    seed_observations(pg_url, 300)
    app = make_celery(settings)
    worker = start_worker(settings, queues="events", concurrency=2)

    entries = corpus(300, seed=11)
    assert {e.category for _, e in entries} == set(CATEGORIES)
    sent_raw = unsendable = 0
    for payload, expected in entries:
        if expected.by == "parse":
            with pytest.raises(InvalidEvent):
                send_event(payload, via=app)
            try:
                app.send_task("events.ingest_event", args=[payload], queue="events")
                sent_raw += 1
            except EncodeError:  # deeper than the producer's own JSON encoder goes: never left it
                unsendable += 1
        else:
            send_event(payload, via=app)
    refused_by_store = sum(e.by == "store" for _, e in entries)
    valid_ids = {json.loads(events.document(p))["event_id"] for p, e in entries if e.outcome == "stored"}
    assert unsendable < sent_raw / 10

    def settled() -> bool:
        return (count(pg_url, SystemEvent, SystemEvent.kind == "event_rejected") >= sent_raw + refused_by_store
                and count(pg_url, Observation, Observation.source == "event") >= len(valid_ids))

    wait_until(settled, timeout=120, what="every fuzzed event stored or rejected")
    time.sleep(1)  # nothing more arrives: no event was stored or rejected twice
    assert count(pg_url, SystemEvent, SystemEvent.kind == "event_rejected") == sent_raw + refused_by_store
    stored = {o.event_id for o in rows(pg_url, Observation, Observation.source == "event")}
    assert stored == valid_ids
    assert all(r.payload["error"] for r in rows(pg_url, SystemEvent, SystemEvent.kind == "event_rejected"))
    assert worker.alive() and trouble(worker) == []

    trainer = start_worker(settings, queues="training,notifications", concurrency=1)
    result = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    # It joins the retrain the stored events asked for; whichever message runs it first, it trains.
    outcome = result["outcome"] if result["status"] == "skipped" else result["status"]
    assert outcome in ("retrained", "kept"), result
    assert trainer.alive()


def test_the_batch_path_with_a_whole_fuzz_corpus(tmp_path: Path, pg_url: str, redis_url: str, make_celery) -> None:
    """10,000 fuzzed events in one publish_events call: every bad one comes back by its index with a
    reason, every valid one is stored once, none costs its neighbours."""
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    entries = corpus(10_000, seed=12)
    published = publish_events((p for p, _ in entries), settings=settings, via=make_celery(settings))
    expected_rejected = [i for i, (_, e) in enumerate(entries) if e.outcome == "rejected"]
    assert [r["index"] for r in published.rejected] == expected_rejected
    assert all(r["error"] for r in published.rejected)
    assert published.stored == sum(e.outcome == "stored" for _, e in entries)
    assert published.duplicates == sum(e.outcome == "duplicate" for _, e in entries)
    assert count(pg_url, Observation, Observation.source == "batch") == published.stored
    assert published.retrains_enqueued == 1


def test_the_worker_turns_any_argument_into_one_string_before_the_pool() -> None:
    """What EventRequest hands the pool child instead of the message's arguments (no worker needed)."""
    from retrainer.tasks.events import UNREADABLE, as_document

    good = purchase(event_id="e-1")
    assert json.loads(as_document([good], {})) == good
    assert json.loads(as_document([], {"payload": good})) == good
    assert as_document(["{already text"], {}) == "{already text"
    for args, kwargs, reason in (
        ([deep(5000)], {}, "a.a: nested deeper than 2 levels"),
        ([good, good], {}, "event: the message's arguments are not one event"),
        ([good], {"x": 1}, "event: the message's arguments are not one event"),
        ([good | {"value": 10**5000}], {}, "value: integer outside ±1e15"),
        ([b"\xff"], {}, "event: not valid UTF-8"),
    ):
        marker = as_document(args, kwargs)
        assert marker.startswith(UNREADABLE + reason), marker[:120]
        assert len(marker) < 2200
