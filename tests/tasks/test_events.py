"""events.ingest_event and the batch path on real workers (Redis broker, PostgreSQL): coalescing,
follow-ups, and bad input that must be kept with its reason and never break the worker."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retrainer.db.records import (
    ModelVersion,
    Observation,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
    Trigger,
)
from services import synthetic
from tasks.producer import publish_events, send_event, send_retrain
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
    assert len(retrain_task_ids(ingest, trainer)) == 2  # one message per window, not one per event
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
    assert "p-unknown" in again.rejected[0]["error"] and "Field required" in again.rejected[1]["error"]
    assert count(pg_url, Observation) == 5000


def test_bad_events_are_rejected_with_reasons_and_the_worker_keeps_working(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    seed_observations(pg_url, 600)
    app = make_celery(settings)
    worker = start_worker(settings, concurrency=1)

    good = purchase()
    bad = {
        "not a dict": (["purchase", 1], "valid dictionary"),
        "not JSON": ("hello", "not valid JSON"),
        "missing fields": ({"type": "purchase", "model": "ctr"}, "purchase.value: Field required"),
        "unknown type": ({"type": "refund", "value": 1.0}, "'refund'"),
        # kombu's JSON carries NaN through as the bare token NaN and decodes it to float nan; the
        # event model then refuses it.
        "NaN value": (good | {"value": float("nan")}, "purchase.value: Input should be a finite number"),
        "NaN feature": (good | {"features": {"hook_strength": float("nan")}}, "is not a finite number"),
        "oversized": (good | {"features": {"blob": "x" * (70 * 1024)}}, "the limit is 65536"),
        "unknown model": (good | {"model": "no-such-model"}, "unknown model 'no-such-model'"),
        "unknown prediction": ({"type": "outcome", "prediction_id": "p-missing", "value": 0.1}, "p-missing"),
    }
    for payload, _ in bad.values():
        send_event(payload, via=app)
    wait_until(lambda: count(pg_url, SystemEvent, SystemEvent.kind == "event_rejected") == len(bad), timeout=60,
               what=f"{len(bad)} rejected events")

    rejected = rows(pg_url, SystemEvent, SystemEvent.kind == "event_rejected", order_by=SystemEvent.id)
    errors = [r.payload["error"] for r in rejected]
    for name, (_, reason) in bad.items():
        assert sum(reason in e for e in errors) == 1, f"{name}: no single rejection saying {reason!r} in {errors}"
    for event in rejected:
        assert event.payload["error"] in event.message
        assert 0 < len(event.payload["payload"]) <= 2000  # kept (truncated) for whoever fixes the producer
    assert count(pg_url, Observation, Observation.source != "seed") == 0
    assert count(pg_url, RetrainRequest) == 0

    # the same worker still stores a good event and completes a normal retrain
    assert worker.alive()
    send_event(good | {"event_id": f"good-{uuid.uuid4().hex[:8]}"}, via=app)
    wait_until(lambda: count(pg_url, Observation, Observation.source == "event") == 1, timeout=30,
               what="the good event")
    result = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert result["status"] in ("retrained", "kept"), result
    assert count(pg_url, ModelVersion, ModelVersion.is_production) == 1
    assert worker.alive()
