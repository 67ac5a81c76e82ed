"""training.retrain_model on real worker processes (Redis broker, PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrainer.db.records import ModelVersion, RunStatus, SystemEvent, TrainingRun
from tasks.producer import send_retrain
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import SLOW_PARAMS, count, rows, seed_observations

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
