"""training.retrain_model on real worker processes (Redis broker, PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from retrainer.db import session_scope
from retrainer.db.records import (
    ModelVersion,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
    Trigger,
)
from tasks.producer import send_event, send_retrain
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import SLOW_PARAMS, count, purchase, rows, seed_observations

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]


def test_retrain_promotes_first_model_and_notifies(tmp_path: Path, pg_url: str, redis_url: str, start_worker,
                                                   make_celery) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    seed_observations(pg_url, 600)
    start_worker(settings)
    app = make_celery(settings)

    sent = send_retrain("ctr", settings=settings, via=app)
    result = sent.get(timeout=120)

    assert result["status"] == "retrained", result
    assert result["promoted"] is True
    assert result["version_id"] == result["production_version"] == "ctr-v1"
    assert result["samples"] + result["holdout"]["rows"] == 600
    metrics = result["metrics"]
    assert {"test_mae", "test_rmse", "test_r2", "test_accuracy", "trained_at"} <= set(metrics)
    assert 0 <= metrics["test_mae"] < 0.01  # the synthetic CTR is learnable; noise sd is 0.002

    (version,) = rows(pg_url, ModelVersion, ModelVersion.model == "ctr")
    assert version.version_id == "ctr-v1"
    assert version.is_production is True
    assert version.status.value == "active"
    assert Path(version.artifact_uri).is_file()

    (run,) = rows(pg_url, TrainingRun, TrainingRun.model == "ctr")
    assert run.run_id == result["run_id"]
    assert run.celery_task_id == sent.id
    assert run.status == RunStatus.COMPLETED and run.outcome == "retrained"
    assert run.version_id == "ctr-v1" and run.promoted_to_production is True

    # after commit the decision is published on the notifications queue (no webhook: logged)
    note = wait_until(
        lambda: rows(pg_url, SystemEvent, SystemEvent.kind == "notification"), timeout=60, what="notification row"
    )
    assert len(note) == 1
    assert note[0].payload["run_id"] == run.run_id
    assert note[0].payload["delivery"] == "logged"
    assert note[0].model == "ctr"


def test_concurrent_duplicate_retrain_runs_once(tmp_path: Path, pg_url: str, redis_url: str, start_worker,
                                                make_celery) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url,
                             models={"ctr": model_config(params=SLOW_PARAMS)})
    seed_observations(pg_url, 5000)
    worker = start_worker(settings, queues="training", concurrency=2)
    app = make_celery(settings)

    first = send_retrain("ctr", settings=settings, via=app)
    second = send_retrain("ctr", settings=settings, via=app)
    results = [first.get(timeout=180), second.get(timeout=180)]

    statuses = sorted(r["status"] for r in results)
    assert statuses == ["retrained", "skipped"], results
    winner = next(r for r in results if r["status"] == "retrained")
    loser = next(r for r in results if r["status"] == "skipped")
    assert loser["holder"] == winner["run_id"]
    assert winner["run_id"] in loser["message"]

    assert count(pg_url, ModelVersion, ModelVersion.model == "ctr") == 1
    assert count(pg_url, ModelVersion, ModelVersion.is_production) == 1
    runs = {r.run_id: r for r in rows(pg_url, TrainingRun)}
    assert runs[winner["run_id"]].status == RunStatus.COMPLETED
    assert runs[loser["run_id"]].status == RunStatus.SKIPPED
    assert runs[loser["run_id"]].version_id is None
    assert worker.alive()


def test_bad_retrain_input_leaves_worker_working(tmp_path: Path, pg_url: str, redis_url: str, start_worker,
                                                 make_celery) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    seed_observations(pg_url, 600)
    worker = start_worker(settings, queues="training,notifications", concurrency=1)
    app = make_celery(settings)

    # an unknown model: a clear error naming it, nothing written
    unknown = app.send_task("training.retrain_model", kwargs={"model": "no-such-model"}, queue="training")
    result = unknown.get(timeout=60)
    assert result["status"] == "error"
    assert "no-such-model" in result["message"]
    assert count(pg_url, TrainingRun) == 0

    first = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert first["status"] == "retrained"

    # the production artifact is corrupted on disk: the checksum refuses it, the candidate replaces it
    artifact = Path(rows(pg_url, ModelVersion, ModelVersion.version_id == "ctr-v1")[0].artifact_uri)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = b"\x00" * 16
    artifact.write_bytes(bytes(data))

    second = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert second["status"] == "retrained", second
    assert second["champion_version"] == "ctr-v1"
    assert second["old_metrics"] is None  # the champion could not be scored
    assert "unusable" in second["reason"] and "checksum" in second["reason"], second["reason"]
    (current,) = rows(pg_url, ModelVersion, ModelVersion.is_production)
    assert current.version_id == "ctr-v2"

    # the worker survived all of it and still does a normal retrain against the new champion
    assert worker.alive()
    third = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert third["status"] in ("retrained", "kept"), third
    assert third["champion_version"] == "ctr-v2"
    assert third["old_metrics"] is not None
    assert worker.alive()


def hold_lock(url: str, run_id: str, lease: timedelta) -> None:
    """A 'running' run row as another worker's retrain would hold it (the model's run lock)."""
    now = datetime.now(UTC)
    with session_scope(url) as session:
        session.add(TrainingRun(run_id=run_id, model="ctr", trigger=Trigger.MANUAL, status=RunStatus.RUNNING,
                                started_at=now, lease_expires_at=now + lease))


def test_follow_up_waits_for_a_held_lock_instead_of_being_lost(tmp_path: Path, pg_url: str, redis_url: str,
                                                               start_worker, make_celery) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url,
                             models={"ctr": model_config(debounce_seconds=0.5)})
    seed_observations(pg_url, 600)
    hold_lock(pg_url, "run_other_worker", lease=timedelta(hours=1))
    app = make_celery(settings)
    worker = start_worker(settings, concurrency=2)

    send_event(purchase(event_id="during-the-run"), via=app)
    (request,) = wait_until(lambda: rows(pg_url, RetrainRequest), timeout=30, what="the follow-up request")
    skipped = wait_until(
        lambda: rows(pg_url, TrainingRun, TrainingRun.request_id == request.id, TrainingRun.status == RunStatus.SKIPPED),
        timeout=30, what="the follow-up to find the lock held",
    )
    assert "run_other_worker" in skipped[0].error_message
    assert rows(pg_url, RetrainRequest)[0].status == RequestStatus.PENDING  # still owed, not dropped

    # the other run finishes; the follow-up's retry (5 s backoff) then takes the lock and trains
    with session_scope(pg_url) as session:
        session.execute(sa.update(TrainingRun).where(TrainingRun.run_id == "run_other_worker")
                        .values(status=RunStatus.COMPLETED, outcome="kept", completed_at=datetime.now(UTC)))
    (run,) = wait_until(
        lambda: rows(pg_url, TrainingRun, TrainingRun.request_id == request.id,
                     TrainingRun.status == RunStatus.COMPLETED),
        timeout=60, what="the follow-up retrain",
    )
    assert run.outcome == "retrained" and run.trigger == Trigger.EVENT
    assert run.dataset_size == 601
    (done,) = rows(pg_url, RetrainRequest)
    assert done.status == RequestStatus.COMPLETED and done.run_id == run.run_id
    assert "retry: Retry in" in worker.output()
    assert worker.alive()


def test_a_dead_workers_lock_expires(tmp_path: Path, pg_url: str, redis_url: str, start_worker,
                                     make_celery) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    seed_observations(pg_url, 600)
    hold_lock(pg_url, "run_of_a_dead_worker", lease=-timedelta(minutes=1))  # its lease is over
    app = make_celery(settings)
    start_worker(settings, queues="training,notifications", concurrency=1)

    result = send_retrain("ctr", settings=settings, via=app).get(timeout=120)

    assert result["status"] == "retrained", result
    (stale,) = rows(pg_url, TrainingRun, TrainingRun.run_id == "run_of_a_dead_worker")
    assert stale.status == RunStatus.FAILED and "lease expired" in stale.error_message
    assert count(pg_url, SystemEvent, SystemEvent.kind == "lock_expired") == 1
