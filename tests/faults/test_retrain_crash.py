"""A retrain survives its worker and its servers: kill -9 of a training child (mid-fit and mid-write),
of a whole worker, PostgreSQL down during a fit, Redis restarted during a retrain, a lost message.

Each test runs real workers and a real beat (whose reconciler repairs what the crash left) on the
suite's private Redis and PostgreSQL, with a short lease so a dead run is noticed in seconds, and
checks the retrain completed exactly once: one completed run for the request, one version, one
production version, no file that no version references.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from retrainer.config import Settings
from retrainer.db import session_scope
from retrainer.db.records import (
    ModelEvaluation,
    ModelVersion,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
)
from retrainer.demo.processes import CeleryProcess
from retrainer.services import retrain_requests
from retrainer.tasks.enqueue import send_retrain
from tests.faults.servers import unhealthy
from tests.support import model_config, wait_until
from tests.tasks.helpers import count, rows, seed_observations

# A fit of a few seconds on 10,000 rows, so a fault lands inside it; its artifact is ~15 MB.
LONG_FIT = {"n_estimators": 3000, "max_depth": 8, "learning_rate": 0.02}
FAST_RECOVERY = {"lease_seconds": 6, "reconcile_every_seconds": 2, "resend_after_seconds": 8,
                 "orphan_grace_seconds": 0}


@pytest.fixture
def settings(fault_settings: Any, fault_db: str) -> Settings:
    seed_observations(fault_db, 10_000)
    return fault_settings(models={"ctr": model_config(params=LONG_FIT, training={"time_limit_seconds": 300})},
                          recovery=FAST_RECOVERY)


@pytest.fixture
def cluster(start_worker: Any, beat: Any) -> Any:
    """`cluster(settings)`: a training worker, a worker for checks (the reconciler) and notifications, and
    beat; returns the two workers."""

    def start(settings: Settings, with_beat: bool = True) -> tuple[CeleryProcess, CeleryProcess]:
        trainer = start_worker(settings, queues="training", concurrency=1)
        helper = start_worker(settings, queues="checks,notifications", concurrency=1)
        if with_beat:
            beat(settings)
        return trainer, helper

    return start


def children(worker: CeleryProcess) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def running_run(url: str, timeout: float = 60) -> TrainingRun:
    return wait_until(lambda: rows(url, TrainingRun, TrainingRun.status == RunStatus.RUNNING), timeout=timeout,
                      what="a running retrain")[0]


def assert_exactly_once(url: str, request_id: int, settings: Settings) -> TrainingRun:
    """The request completed by one run; one version, in production; no file but the version's."""
    (request,) = rows(url, RetrainRequest, RetrainRequest.id == request_id)
    assert request.status == RequestStatus.COMPLETED, request.error_message
    completed = rows(url, TrainingRun, TrainingRun.request_id == request_id, TrainingRun.status == RunStatus.COMPLETED)
    assert len(completed) == 1 and completed[0].run_id == request.run_id
    (version,) = rows(url, ModelVersion)
    assert version.is_production and completed[0].version_id == version.version_id
    assert count(url, ModelEvaluation) == 1  # the first model: a candidate only
    assert count(url, TrainingRun, TrainingRun.status == RunStatus.RUNNING) == 0
    files = sorted(p.name for p in Path(settings.artifact_dir).rglob("*") if p.is_file())
    assert files == [Path(version.artifact_uri).name]
    return completed[0]


def wait_completed(url: str, request_id: int, timeout: float = 120) -> None:
    wait_until(lambda: rows(url, RetrainRequest, RetrainRequest.id == request_id,
                            RetrainRequest.status.in_([RequestStatus.COMPLETED, RequestStatus.FAILED])),
               timeout=timeout, what=f"request {request_id} to finish")


def test_a_training_child_killed_mid_fit_is_rerun_once(settings: Settings, fault_db: str, make_celery,
                                                       cluster) -> None:
    trainer, helper = cluster(settings)
    send_retrain("ctr", settings=settings, via=make_celery(settings))
    victim = running_run(fault_db)
    time.sleep(1.0)  # inside the fit
    (child,) = children(trainer)
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()

    wait_completed(fault_db, victim.request_id)
    recovered_in = time.monotonic() - killed_at
    run = assert_exactly_once(fault_db, victim.request_id, settings)
    (dead,) = rows(fault_db, TrainingRun, TrainingRun.run_id == victim.run_id)
    assert dead.status == RunStatus.FAILED and "lease expired" in dead.error_message
    assert run.run_id != victim.run_id
    print(f"\nchild killed mid-fit: the retrain completed {recovered_in:.1f} s after the kill (lease "
          f"{settings.recovery.lease_seconds} s)")
    assert recovered_in < 60, f"re-run took {recovered_in:.0f} s"
    assert unhealthy(trainer, helper) == []


def test_a_child_killed_while_writing_its_artifact_leaves_no_file(settings: Settings, fault_db: str, beat,
                                                                 make_celery, cluster) -> None:
    trainer, helper = cluster(settings, with_beat=False)
    send_retrain("ctr", settings=settings, via=make_celery(settings))
    victim = running_run(fault_db)
    folder = Path(settings.artifact_dir) / "ctr"

    deadline = time.monotonic() + 120
    while not (folder.is_dir() and any(p.name.startswith(".") for p in folder.iterdir())):
        assert time.monotonic() < deadline, "the artifact was never written"
        time.sleep(0.002)
    (child,) = children(trainer)
    os.kill(child, signal.SIGKILL)  # mid-write: a partial temporary file is on disk
    left = sorted(p.name for p in folder.iterdir())
    assert any(name.startswith(f".{victim.run_id}.") for name in left), left

    beat(settings)  # the reconciler: expires the run, re-sends its request, sweeps its files
    wait_completed(fault_db, victim.request_id)
    assert_exactly_once(fault_db, victim.request_id, settings)
    assert unhealthy(trainer, helper) == []


def test_a_whole_worker_killed_mid_fit_is_rerun_once_by_a_new_worker(settings: Settings, fault_db: str,
                                                                     start_worker, make_celery, cluster) -> None:
    doomed, helper = cluster(settings)
    send_retrain("ctr", settings=settings, via=make_celery(settings))
    victim = running_run(fault_db)
    time.sleep(1.0)
    os.killpg(doomed.proc.pid, signal.SIGKILL)  # the worker and its children: a lost node
    doomed.proc.wait(timeout=10)

    replacement = start_worker(settings, queues="training", concurrency=1)
    started_at = time.monotonic()
    # Its message sits unacknowledged in Redis until the visibility timeout (an hour); the
    # reconciler re-sends the request as soon as the dead run's lease runs out.
    wait_completed(fault_db, victim.request_id)
    recovered_in = time.monotonic() - started_at
    assert_exactly_once(fault_db, victim.request_id, settings)
    print(f"\nworker killed mid-fit: the retrain completed {recovered_in:.1f} s after a new worker started")
    assert recovered_in < 60, f"re-run took {recovered_in:.0f} s after the new worker started"
    assert unhealthy(replacement, helper) == []


def test_postgres_down_during_a_fit(settings: Settings, fault_db: str, own_postgres: Any, make_celery,
                                    cluster) -> None:
    trainer, helper = cluster(settings)
    send_retrain("ctr", settings=settings, via=make_celery(settings))
    victim = running_run(fault_db)
    time.sleep(1.0)  # the data is loaded; the fit runs without the database
    own_postgres.stop("fast")
    # Down until the fit has ended and its result could not be written: the task retried.
    wait_until(lambda: "Retry in" in trainer.output(), timeout=120, interval=0.1, what="the retrain to meet the dead database")
    own_postgres.start()

    wait_completed(fault_db, victim.request_id, timeout=180)
    run = assert_exactly_once(fault_db, victim.request_id, settings)
    # The fit ended while the database was away: its result could not be written, the task retried,
    # and the retry took over its own earlier run at once (no lease to wait for).
    assert "Retry in" in trainer.output()
    (lost,) = rows(fault_db, TrainingRun, TrainingRun.run_id == victim.run_id)
    assert run.run_id != victim.run_id and lost.status == RunStatus.FAILED
    assert "superseded by attempt" in lost.error_message or "lease expired" in lost.error_message
    assert unhealthy(trainer, helper) == []


def test_postgres_down_as_a_retrain_starts(settings: Settings, fault_db: str, own_postgres: Any, make_celery,
                                           cluster) -> None:
    trainer, helper = cluster(settings)
    with session_scope(fault_db) as session:
        request_id = retrain_requests.coalesce(session, settings, "ctr", window=3).request_id
    own_postgres.stop("fast")
    send_retrain("ctr", request_id=request_id, settings=settings, via=make_celery(settings))
    # the task meets the dead database and retries with backoff
    wait_until(lambda: "Retry in" in trainer.output(), timeout=60, interval=0.1, what="the retrain to meet the dead database")
    own_postgres.start()

    wait_completed(fault_db, request_id, timeout=180)
    assert_exactly_once(fault_db, request_id, settings)
    assert "Retry in" in trainer.output()  # a transient error is retried, not turned into an "error" result
    assert unhealthy(trainer, helper) == []


def test_redis_restarted_during_a_retrain(settings: Settings, fault_db: str, own_redis: Any, make_celery,
                                          cluster) -> None:
    trainer, helper = cluster(settings)
    send_retrain("ctr", settings=settings, via=make_celery(settings))
    victim = running_run(fault_db)
    own_redis.restart(down_seconds=2)

    wait_completed(fault_db, victim.request_id)
    run = assert_exactly_once(fault_db, victim.request_id, settings)
    assert run.run_id == victim.run_id  # the fit was never interrupted
    # Its decision is published even if the broker was away when the run ended.
    wait_until(lambda: rows(fault_db, TrainingRun, TrainingRun.run_id == run.run_id,
                            TrainingRun.notified_at.is_not(None)), timeout=60, what="the notification")
    assert unhealthy(trainer, helper) == []


def test_a_lost_retrain_message_is_sent_again(settings: Settings, fault_db: str, own_redis: Any, make_celery,
                                              cluster) -> None:
    # re-sent once 4 s past due rather than FAST_RECOVERY's 8: nothing else here could have sent it
    settings = settings.model_copy(update={"recovery": settings.recovery.model_copy(update={"resend_after_seconds": 4})})
    send_retrain("ctr", settings=settings, via=make_celery(settings))  # the message of request 1...
    own_redis.client().flushall()  # ...lost, as by a Redis restart without persistence
    trainer, helper = cluster(settings)
    (request,) = rows(fault_db, RetrainRequest)

    wait_completed(fault_db, request.id, timeout=90)
    assert_exactly_once(fault_db, request.id, settings)
    repairs = rows(fault_db, SystemEvent, SystemEvent.kind == "reconcile")
    assert any(request.id in r.payload["resent_requests"] for r in repairs)
    assert unhealthy(trainer, helper) == []
