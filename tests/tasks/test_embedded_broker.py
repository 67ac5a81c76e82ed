"""The embedded default: kombu's filesystem:// broker, a db+sqlite result backend and a SQLite database,
with a real worker process (no server, no eager mode, no in-memory transport)."""

from __future__ import annotations

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
from retrainer.demo import synthetic
from retrainer.tasks.enqueue import send_retrain
from retrainer.tasks.producer import publish_events
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import count, rows

pytestmark = [pytest.mark.worker]


def test_embedded_broker_runs_a_storm_and_a_retrain(tmp_path: Path, sqlite_db: str, start_worker,
                                                    make_celery) -> None:
    settings = make_settings(tmp_path, sqlite_db, models={"ctr": model_config(debounce_seconds=1)})
    assert settings.broker_url == "filesystem://"
    assert settings.result_backend.startswith("db+sqlite:///")
    app = make_celery(settings)

    # A purchase storm through the batch path, ten producer calls of 200 events, before any worker
    # consumes: however slow this machine is, the whole storm lands in one debounce window.
    end = datetime.now(UTC) - timedelta(minutes=5)
    generated = synthetic.generate(2000, end - timedelta(days=14), end, seed=3)
    storm = synthetic.as_purchase_events(generated, "ctr", prefix="storm")
    published = [publish_events(storm[i:i + 200], settings=settings, via=app) for i in range(0, 2000, 200)]
    assert sum(p.stored for p in published) == 2000
    assert sum(p.retrains_enqueued for p in published) == 1
    assert all(p.rejected == [] for p in published)
    (request,) = rows(sqlite_db, RetrainRequest)
    assert request.status == RequestStatus.PENDING and request.event_count == 2000
    queued = list((settings.broker_folder / "queue").iterdir())
    assert len(queued) == 1  # one message file on the embedded broker, not 2000

    worker = start_worker(settings, concurrency=1)
    (run,) = wait_until(
        lambda: rows(sqlite_db, TrainingRun, TrainingRun.status == RunStatus.COMPLETED), timeout=90,
        what="the storm's retrain",
    )
    assert run.trigger == Trigger.EVENT and run.request_id == request.id
    assert run.outcome == "retrained" and run.dataset_size == 2000
    assert rows(sqlite_db, RetrainRequest)[0].status == RequestStatus.COMPLETED

    # a manual retrain through the same broker; its result comes back through the db+sqlite backend
    sent = send_retrain("ctr", settings=settings, via=app)
    result = sent.get(timeout=120)
    assert result["status"] in ("retrained", "kept"), result
    assert result["champion_version"] == "ctr-v1"
    assert result["old_metrics"] is not None
    (manual,) = rows(sqlite_db, TrainingRun, TrainingRun.trigger == Trigger.MANUAL)
    assert manual.celery_task_id == sent.id and manual.status == RunStatus.COMPLETED

    assert count(sqlite_db, TrainingRun) == 2
    assert count(sqlite_db, RetrainRequest, RetrainRequest.status == RequestStatus.COMPLETED) == 2  # events, manual
    assert count(sqlite_db, Observation) == 2000
    assert count(sqlite_db, ModelVersion, ModelVersion.is_production) == 1
    wait_until(lambda: count(sqlite_db, SystemEvent, SystemEvent.kind == "notification") == 2, timeout=60,
               what="both decisions published")
    assert worker.alive()
