"""Controls and triggers on a real worker (Redis broker, PostgreSQL): a high request overtakes a backlog
of normal work, a cancelled request does nothing, a paused model's trigger is suppressed while a
person's request still runs, the budget stops an automatic run, and the errors check starts a fine-tune."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from retrainer.config import ModelConfig
from retrainer.db import session_scope
from retrainer.db.records import Priority, RequestStatus, RetrainRequest, RunStatus, SystemEvent, TrainingRun, Trigger
from retrainer.demo.processes import child_env, start_worker, write_config
from retrainer.services import controls, predictions, retrain_requests
from retrainer.tasks.enqueue import send_retrain
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import rows, seed_observations

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]

QUEUE_ORDER = ["normal_1", "normal_2", "normal_3", "low", "high"]  # the order they are sent in


def ask(url: str, model: str, priority: Priority, by: str = "alice") -> int:
    with session_scope(url) as session:
        request = retrain_requests.ask(session, model, by, f"test {priority.value}", priority)
        session.flush()
        return request.id


def runs(url: str, *where) -> list[TrainingRun]:
    return rows(url, TrainingRun, TrainingRun.status != RunStatus.SKIPPED, *where, order_by=TrainingRun.started_at)


def test_controls_and_triggers_on_a_real_worker(tmp_path: Path, pg_url: str, redis_url: str, start_worker,
                                                make_celery) -> None:
    models = {name: model_config() for name in [*QUEUE_ORDER, "cancelled", "paused"]}
    models["normal_2"] = model_config(budget={"max_runs": 1}, new_data={"min_hours": 0})
    models["normal_3"] = model_config(errors={"tolerance": 0.05})
    models["paused"] = model_config(new_data={"min_hours": 0})
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, models=models)
    for i, name in enumerate(models):
        seed_observations(pg_url, 300, model=name, seed=i + 1)
    app = make_celery(settings)

    # A backlog waits in the training queue before any worker runs: normal, normal, normal, low, high.
    sent = {}
    for name in QUEUE_ORDER + ["cancelled"]:
        level = Priority.NORMAL if name.startswith(("normal", "cancelled")) else Priority(name)
        sent[name] = ask(pg_url, name, level)
        send_retrain(name, "manual", sent[name], settings=settings, via=app, priority=level)
    with session_scope(pg_url) as session:
        retrain_requests.cancel(session, sent["cancelled"], "alice")
        controls.set_paused(session, "paused", True, "ops", "holiday freeze")

    start_worker(settings, queues="training,checks", concurrency=1)
    wait_until(lambda: len(runs(pg_url, TrainingRun.status == RunStatus.COMPLETED)) == 5, timeout=180,
               what="the backlog's five runs")
    assert [r.model for r in runs(pg_url)] == ["high", "normal_1", "normal_2", "normal_3", "low"]
    with session_scope(pg_url) as session:
        cancelled = session.get(RetrainRequest, sent["cancelled"])
        assert cancelled.status == RequestStatus.CANCELLED and cancelled.run_id is None
        assert session.scalar(sa.select(sa.func.count()).select_from(TrainingRun)
                              .where(TrainingRun.model == "cancelled", TrainingRun.status != RunStatus.SKIPPED)) == 0

    def check(task: str, model: str) -> dict:
        return app.send_task(f"checks.{task}", kwargs={"model": model}, queue="checks").get(timeout=60)

    # Paused: the new-data trigger fires and is recorded as suppressed; a person's request still runs.
    paused = check("check_new_data", "paused")
    assert paused["status"] == "retrain_needed" and paused["retrain_enqueued"] is False
    assert "model paused by ops" in paused["suppressed"] and "holiday freeze" in paused["suppressed"]
    request_id = ask(pg_url, "paused", Priority.NORMAL)
    assert send_retrain("paused", "manual", request_id, settings=settings, via=app).get(timeout=120)["status"] == "retrained"

    # Budget of one automatic run: the first new-data retrain runs, the second trigger is suppressed.
    seed_observations(pg_url, 150, model="normal_2", seed=50, created_at=datetime.now(UTC))
    first = check("check_new_data", "normal_2")
    assert first["status"] == "retrain_needed" and first["retrain_enqueued"] is True
    wait_until(lambda: runs(pg_url, TrainingRun.model == "normal_2", TrainingRun.trigger == Trigger.NEW_SAMPLES,
                            TrainingRun.completed_at.is_not(None)), timeout=120, what="the new-data run")
    seed_observations(pg_url, 150, model="normal_2", seed=51, created_at=datetime.now(UTC))
    second = check("check_new_data", "normal_2")
    assert second["retrain_enqueued"] is False
    assert second["suppressed"] == "retrain budget spent: 1 automatic runs in the last 24 h (budget.max_runs 1)"

    # Ten confident wrong predictions of the production version: a fine-tune from it.
    now = datetime.now(UTC)
    with session_scope(pg_url) as session:
        for i in range(10):
            predictions.log_prediction(session, "normal_3", {"hook_strength": 0.5}, 0.1, version_id="normal_3-v1",
                                       confidence=0.9, prediction_id=f"n3-{i}", at=now - timedelta(hours=1))
            session.flush()
            predictions.record_outcome(session, f"n3-{i}", 0.3, at=now - timedelta(minutes=30))
    errors = check("check_errors", "normal_3")
    assert errors["status"] == "retrain_needed" and errors["fine_tune"] and errors["retrain_enqueued"]
    tuned = wait_until(lambda: runs(pg_url, TrainingRun.model == "normal_3", TrainingRun.trigger == Trigger.ERRORS,
                                    TrainingRun.completed_at.is_not(None)), timeout=120, what="the fine-tune")[0]
    assert tuned.fine_tune is True and "fine-tuned from normal_3-v1" in tuned.promotion_reason

    with session_scope(pg_url) as session:
        kinds = session.execute(sa.select(SystemEvent.model, SystemEvent.payload["trigger"].as_string())
                                .where(SystemEvent.kind == "suppressed")).all()
    assert sorted(kinds) == [("normal_2", "new_samples"), ("paused", "new_samples")]


def test_a_model_added_to_the_file_reaches_a_running_worker(tmp_path: Path, pg_url: str, redis_url: str,
                                                            make_celery) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    config = write_config(settings, tmp_path / "retrainer.yaml")
    worker = start_worker(tmp_path / "worker.log", "training", 1, "test", child_env(config), cwd=tmp_path)
    try:
        seed_observations(pg_url, 300, model="late", seed=3)
        later = settings.model_copy(update={"models": settings.models | {"late": ModelConfig(**model_config())}})
        write_config(later, config)  # no restart: the worker's next task sees the new model
        result = send_retrain("late", settings=later, via=make_celery(later)).get(timeout=120)
        assert result["status"] == "retrained", result
        assert "configuration reloaded" in worker.output() and "models added: late" in worker.output()
    finally:
        worker.stop(timeout=0)  # the test is over: no warm shutdown to wait out
