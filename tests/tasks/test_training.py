"""training.retrain_model on real worker processes (Redis broker, PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retrainer.db import session_scope
from retrainer.db.records import (
    LedgerEntry,
    ModelEvaluation,
    ModelVersion,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
    Trigger,
)
from retrainer.services import registry, retrain_requests
from retrainer.tasks.enqueue import RetrainFailed, send_retrain
from retrainer.tasks.producer import send_event
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


def test_a_worker_decides_with_the_rules_and_records_each_one(tmp_path: Path, pg_url: str, redis_url: str,
                                                              start_worker, make_celery) -> None:
    """Through a real worker: the first model beats a constant, the second (same data) is kept because it is
    not better beyond noise; both decisions are recorded rule by rule, with their paired tests and the
    ledger row of the one promotion."""
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    seed_observations(pg_url, 600)
    start_worker(settings, queues="training,notifications", concurrency=1)
    app = make_celery(settings)
    first = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    second = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert first["status"] == "retrained" and "beats a constant prediction" in first["reason"], first
    assert second["status"] == "kept" and second["test"]["rows"] == 120, second
    runs = {r.run_id: r for r in rows(pg_url, TrainingRun)}
    assert [r["rule"] for r in runs[first["run_id"]].decision["rules"]] == ["baseline", "auto_promote"]
    rules = {r["rule"]: r for r in runs[second["run_id"]].decision["rules"]}
    assert rules["evidence"]["passed"] is True and rules["improvement"]["passed"] is False
    assert rules["significance"]["note"].startswith("95% interval")
    evaluations = rows(pg_url, ModelEvaluation, ModelEvaluation.role == "candidate")
    assert {e.test["reference"] for e in evaluations} == {"baseline", "champion"}
    (entry,) = rows(pg_url, LedgerEntry)
    assert (entry.version_id, entry.actor, entry.run_id) == ("ctr-v1", "policy", first["run_id"])
    logs = wait_until(lambda: rows(pg_url, TrainingRun, TrainingRun.run_id == second["run_id"])[0].logs,
                      timeout=30, what="the run's logs")
    assert "rule significance" in logs


def test_concurrent_duplicate_retrain_runs_once(tmp_path: Path, pg_url: str, redis_url: str, start_worker,
                                                make_celery) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url,
                             models={"ctr": model_config(params=SLOW_PARAMS)})
    seed_observations(pg_url, 5000)
    worker = start_worker(settings, queues="training", concurrency=2)
    app = make_celery(settings)

    first = send_retrain("ctr", settings=settings, via=app)
    second = send_retrain("ctr", settings=settings, via=app)  # joins the first one's request
    results = [first.get(timeout=180), second.get(timeout=180)]

    statuses = sorted(r["status"] for r in results)
    assert statuses == ["retrained", "skipped"], results
    winner = next(r for r in results if r["status"] == "retrained")
    loser = next(r for r in results if r["status"] == "skipped")
    assert loser["request_id"] == winner["request_id"]
    assert winner["run_id"] in loser["message"] or "already handled" in loser["message"]

    assert count(pg_url, ModelVersion, ModelVersion.model == "ctr") == 1
    assert count(pg_url, ModelVersion, ModelVersion.is_production) == 1
    (run,) = rows(pg_url, TrainingRun)  # the duplicate wrote nothing
    assert run.run_id == winner["run_id"] and run.status == RunStatus.COMPLETED
    (request,) = rows(pg_url, RetrainRequest)
    assert request.status == RequestStatus.COMPLETED and request.run_id == run.run_id
    assert worker.alive()


def test_bad_retrain_input_leaves_worker_working(tmp_path: Path, pg_url: str, redis_url: str, start_worker,
                                                 make_celery) -> None:
    # without the constant-baseline bar, nothing vouches for a candidate against an unscorable champion
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url,
                             models={"ctr": model_config(promotion={"baseline": False})})
    seed_observations(pg_url, 600)
    worker = start_worker(settings, queues="training,notifications", concurrency=1)
    app = make_celery(settings)

    # a model this worker does not know (a producer configured otherwise): the task fails naming it, and
    # closes the request it was sent for, which would otherwise stay pending and be re-sent for ever
    with session_scope(pg_url) as session:
        request_id = retrain_requests.open_now(session, "no-such-model", Trigger.EVENT, "producer").id
    unknown = app.send_task("training.retrain_model", kwargs={"model": "no-such-model", "request_id": request_id},
                            queue="training")
    with pytest.raises(RetrainFailed, match="unknown model 'no-such-model'; configured models: ctr"):
        unknown.get(timeout=60)
    assert unknown.state == "FAILURE"
    (request,) = rows(pg_url, RetrainRequest, RetrainRequest.id == request_id)
    assert request.status == RequestStatus.FAILED and "unknown model 'no-such-model'" in request.error_message
    assert count(pg_url, TrainingRun) == 0

    first = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert first["status"] == "retrained"

    # the production artifact is corrupted on disk: the checksum refuses it, and a champion that cannot
    # be scored hands production to no candidate (no floor, no baseline bar here): kept, a person decides
    artifact = Path(rows(pg_url, ModelVersion, ModelVersion.version_id == "ctr-v1")[0].artifact_uri)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = b"\x00" * 16
    artifact.write_bytes(bytes(data))

    second = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert second["status"] == "kept", second
    assert second["champion_version"] == "ctr-v1"
    assert second["old_metrics"] is None  # the champion could not be scored
    assert "cannot be scored" in second["reason"] and "checksum" in second["reason"], second["reason"]
    (current,) = rows(pg_url, ModelVersion, ModelVersion.is_production)
    assert current.version_id == "ctr-v1"

    # a person promotes the candidate; the worker survived all of it and does a normal retrain against it
    with session_scope(pg_url) as session:
        registry.promote(session, "ctr-v2", expected_id="ctr-v1", actor="test")
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


def test_a_follow_up_waits_for_the_running_retrain_and_runs_after_it(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url,
                             models={"ctr": model_config(params=SLOW_PARAMS, debounce_seconds=0.5)})
    seed_observations(pg_url, 5000)
    app = make_celery(settings)
    worker = start_worker(settings, queues="training,events,notifications", concurrency=2)

    first = send_retrain("ctr", settings=settings, via=app)
    wait_until(lambda: rows(pg_url, TrainingRun, TrainingRun.status == RunStatus.RUNNING), timeout=60,
               what="the first retrain to start")
    send_event(purchase(event_id="during-the-run"), via=app)
    skipped = wait_until(
        lambda: rows(pg_url, TrainingRun, TrainingRun.status == RunStatus.SKIPPED), timeout=60,
        what="the follow-up to find the lock held",
    )
    assert first.get(timeout=180)["status"] == "retrained"
    follow_up_id = skipped[0].request_id
    # The first run's task sends the follow-up when it ends: no retry loop, no waiting for a reconciler.
    (run,) = wait_until(
        lambda: rows(pg_url, TrainingRun, TrainingRun.request_id == follow_up_id,
                     TrainingRun.status == RunStatus.COMPLETED),
        timeout=120, what="the follow-up retrain",
    )
    assert run.trigger == Trigger.EVENT and run.dataset_size == 5001
    (done,) = rows(pg_url, RetrainRequest, RetrainRequest.id == follow_up_id)
    assert done.status == RequestStatus.COMPLETED and done.run_id == run.run_id
    assert "Retry in" not in worker.output()
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


def test_a_retrain_that_ends_in_error_is_a_failed_task(tmp_path: Path, pg_url: str, redis_url: str, start_worker,
                                                       make_celery) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the artifact cannot be written under a file: the run ends in error after its fit
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, artifact_dir=str(blocker / "artifacts"))
    seed_observations(pg_url, 600)
    worker = start_worker(settings, queues="training,notifications", concurrency=1)
    app = make_celery(settings)

    sent = send_retrain("ctr", settings=settings, via=app)
    with pytest.raises(RetrainFailed) as info:
        sent.get(timeout=120)

    assert sent.state == "FAILURE"  # what Flower shows
    (run,) = rows(pg_url, TrainingRun)
    assert str(info.value) == f"retrain of 'ctr' failed (run {run.run_id}): {info.value.result['message']}"
    assert info.value.result["status"] == "error" and info.value.result["run_id"] == run.run_id
    assert "NotADirectoryError" in info.value.result["message"]
    # the clean-up ran before the task raised: the run and its request say why, the decision is published
    assert run.status == RunStatus.FAILED and run.outcome == "error" and "NotADirectoryError" in run.error_message
    (request,) = rows(pg_url, RetrainRequest)
    assert request.status == RequestStatus.FAILED and request.error_message == run.error_message
    assert count(pg_url, ModelVersion) == 0
    wait_until(lambda: rows(pg_url, SystemEvent, SystemEvent.kind == "notification"), timeout=60,
               what="the failed run's notification")
    assert worker.alive()


def test_runs_keep_their_logs_and_a_third_failure_in_a_week_alerts_once(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # every run fails after its fit: the artifact cannot be written under a file
    broken = make_settings(tmp_path, pg_url, broker_url=redis_url, artifact_dir=str(blocker / "artifacts"))
    seed_observations(pg_url, 600)
    start_worker(broken, queues="training,notifications", concurrency=1)
    app = make_celery(broken)

    for n in range(1, 5):
        with pytest.raises(RetrainFailed):
            send_retrain("ctr", settings=broken, via=app).get(timeout=120)
        alerts = rows(pg_url, SystemEvent, SystemEvent.kind == "alert")
        assert len(alerts) == (0 if n < 3 else 1), (n, alerts)  # the third failure alerts; the fourth, the same day, not

    runs = rows(pg_url, TrainingRun, order_by=TrainingRun.started_at)
    assert [r.status for r in runs] == [RunStatus.FAILED] * 4
    for run in runs:  # failed runs keep their lines: time-stamped, the task's own verdict among them
        assert run.logs, run.run_id
        assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO retrainer\.tasks\.training: retrain ctr: error "
                         r".*NotADirectoryError", run.logs, re.MULTILINE), run.logs
    (alert,) = rows(pg_url, SystemEvent, SystemEvent.kind == "alert")
    assert alert.model == "ctr" and alert.payload["failed_runs"] == [r.run_id for r in reversed(runs[:3])]
    assert f"retrainer logs {runs[2].run_id}" in alert.message
    sent = wait_until(lambda: [e for e in rows(pg_url, SystemEvent, SystemEvent.kind == "notification")
                               if e.payload.get("alert_event_id") == alert.id], timeout=60, what="the alert's notification")
    assert sent[0].payload["delivery"] == "logged"
