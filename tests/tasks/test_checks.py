"""checks.check_accuracy on a real worker (Redis broker, PostgreSQL): live accuracy of the production
version decides whether a retrain is enqueued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retrainer.db import session_scope
from retrainer.db.records import Observation, RequestStatus, RetrainRequest, RunStatus, TrainingRun, Trigger
from retrainer.demo import synthetic
from retrainer.services import predictions
from retrainer.tasks.enqueue import send_retrain
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import count, rows, seed_observations

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]


def log_outcomes(url: str, model: str, version_id: str, n: int, offset: float, seed: int,
                 days_ago: tuple[float, float] = (3, 0.0035)) -> list[datetime]:
    """`n` served predictions between `days_ago` (default: the last 3 days) whose real outcome is
    `offset` above the prediction; their times."""
    now = datetime.now(UTC)
    generated = synthetic.generate(n, now - timedelta(days=days_ago[0]), now - timedelta(days=days_ago[1]), seed=seed)
    with session_scope(url) as session:
        for i, row in enumerate(generated):
            predicted = round(row.label, 5)
            record = predictions.log_prediction(
                session, model, row.features, predicted, version_id=version_id,
                prediction_id=f"{model}-{seed}-p{i}", at=row.event_time, segments={"hook_type": row.hook_type},
            )
            session.flush()
            predictions.record_outcome(session, record.prediction_id, predicted + offset, at=row.event_time)
    return [row.event_time for row in generated]


def test_check_accuracy_enqueues_a_retrain_only_when_live_accuracy_degrades(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    # no cooldown: a retrain just made the production versions, and the check must still act
    cfg = model_config(accuracy={"cooldown_hours": 0, "mae_threshold": 0.02, "min_samples": 50})
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, models={"ctr": cfg, "ctr_ok": cfg})
    seed_observations(pg_url, 600, model="ctr", seed=1)
    seed_observations(pg_url, 600, model="ctr_ok", seed=2)
    app = make_celery(settings)
    start_worker(settings, concurrency=2)

    def check(model: str) -> dict:
        return app.send_task("checks.check_accuracy", kwargs={"model": model}, queue="checks").get(timeout=60)

    for model in ("ctr", "ctr_ok"):
        assert send_retrain(model, settings=settings, via=app).get(timeout=120)["status"] == "retrained"

    # too few outcomes yet: no decision either way
    early = check("ctr")
    assert early["status"] == "insufficient_data", early
    assert early["retrain_enqueued"] is False

    log_outcomes(pg_url, "ctr", "ctr-v1", 60, offset=0.05, seed=11)  # off by 0.05 > 0.02
    log_outcomes(pg_url, "ctr_ok", "ctr_ok-v1", 60, offset=0.004, seed=12)  # well inside

    degraded = check("ctr")
    assert degraded["status"] == "retrain_needed", degraded
    assert degraded["retrain_enqueued"] is True
    assert degraded["production_version"] == "ctr-v1"
    assert degraded["current_accuracy"]["total_predictions"] == 60
    assert degraded["current_accuracy"]["ctr_mae"] == pytest.approx(0.05, abs=1e-6)

    run = wait_until(
        lambda: rows(pg_url, TrainingRun, TrainingRun.trigger == Trigger.ACCURACY,
                     TrainingRun.status == RunStatus.COMPLETED),
        timeout=120, what="the accuracy-triggered retrain",
    )[0]
    assert run.model == "ctr"
    assert run.outcome in ("retrained", "kept")
    (request,) = rows(pg_url, RetrainRequest, RetrainRequest.model == "ctr", RetrainRequest.trigger == Trigger.ACCURACY)
    assert request.run_id == run.run_id and request.status == RequestStatus.COMPLETED
    assert run.dataset_size == 660  # the 60 outcomes became training rows too

    healthy = check("ctr_ok")
    assert healthy["status"] == "no_retrain_needed", healthy
    assert healthy["retrain_enqueued"] is False
    assert healthy["current_accuracy"]["ctr_mae"] == pytest.approx(0.004, abs=1e-6)
    # the check commits a request before it enqueues; none but the first retrain's means nothing was enqueued
    assert count(pg_url, RetrainRequest, RetrainRequest.model == "ctr_ok") == 1
    assert count(pg_url, TrainingRun, TrainingRun.model == "ctr_ok") == 1  # only the first retrain
    assert count(pg_url, TrainingRun, TrainingRun.trigger == Trigger.ACCURACY) == 1


def test_a_breach_after_a_change_retrains_on_the_rows_since_the_change(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    """services/since_change.py on a real worker: the check places the change on ctr-v1's live record and
    the retrain it enqueues fits on the rows from then on, recorded as train_since on request and run."""
    cfg = model_config(accuracy={"cooldown_hours": 0, "mae_threshold": 0.02, "min_samples": 50})
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, models={"ctr": cfg})
    seed_observations(pg_url, 600, model="ctr", seed=1)
    app = make_celery(settings)
    start_worker(settings, concurrency=2)
    assert send_retrain("ctr", settings=settings, via=app).get(timeout=120)["status"] == "retrained"
    good = log_outcomes(pg_url, "ctr", "ctr-v1", 300, offset=0.001, seed=21, days_ago=(3, 2))
    bad = log_outcomes(pg_url, "ctr", "ctr-v1", 200, offset=0.06, seed=22, days_ago=(1, 0.01))  # MAE 0.025 overall

    result = app.send_task("checks.check_accuracy", kwargs={"model": "ctr"}, queue="checks").get(timeout=60)
    assert result["status"] == "retrain_needed" and result["retrain_enqueued"] is True, result
    since = datetime.fromisoformat(result["train_since"])
    assert max(good) < since <= min(bad)
    since_then = count(pg_url, Observation, Observation.event_time >= since)  # the bad block and ~20 seeded rows
    assert result["change"]["rows_since"] == since_then and result["change"]["rows_needed"] == 50
    run = wait_until(lambda: rows(pg_url, TrainingRun, TrainingRun.trigger == Trigger.ACCURACY,
                                  TrainingRun.status == RunStatus.COMPLETED), timeout=120, what="the retrain")[0]
    (request,) = rows(pg_url, RetrainRequest, RetrainRequest.trigger == Trigger.ACCURACY)
    assert request.train_since == run.train_since == since
    assert run.dataset_size == since_then < 250  # of 1,100 stored rows
    assert f"training on the {since_then} rows since" in run.logs


def test_beat_compacts_training_rows_into_blocks_that_retrains_read(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    from sqlalchemy import update

    from retrainer.db.records import Observation, ObservationBlock

    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    seed_observations(pg_url, 300, model="ctr", seed=3)
    with session_scope(pg_url) as session:  # older than the grace period that waits for late commits
        session.execute(update(Observation).values(created_at=datetime.now(UTC) - timedelta(hours=1)))
    app = make_celery(settings)
    start_worker(settings, concurrency=1)
    app.send_task("checks.compact_observations", queue="checks")
    block = wait_until(lambda: rows(pg_url, ObservationBlock), 60, what="the compaction's block")[0]
    assert (block.model, block.rows) == ("ctr", 300)
    result = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert result["status"] == "retrained" and result["samples"] + result["holdout"]["rows"] == 300


def test_monitor_retrains_when_the_accept_rate_of_recent_cycles_drops(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    from retrainer.tasks.producer import publish_events

    settings = make_settings(tmp_path, pg_url, broker_url=redis_url)
    seed_observations(pg_url, 300, model="ctr", seed=4)
    app = make_celery(settings)
    start_worker(settings, concurrency=2)

    def monitor() -> dict:
        return app.send_task("checks.monitor", kwargs={"model": "ctr"}, queue="checks").get(timeout=60)

    assert monitor()["status"] == "no_cycles"  # nothing yet: a recorded no-op, not an error
    start = datetime.now(UTC) - timedelta(hours=6)
    feedback = [{"type": "feedback", "model": "ctr", "cycle_id": f"cycle-{c}", "accepted": int(ok), "rejected": int(not ok),
                 "occurred_at": (start + timedelta(hours=c, seconds=i)).isoformat()}
                for c in range(5) for i, ok in enumerate([True] * 11 + [False] * 9)]  # 0.55 a cycle
    assert publish_events(feedback, settings=settings, via=app).stored == 100
    fired = monitor()
    assert fired["status"] == "retrain_needed" and fired["retrain_enqueued"] is True, fired
    assert fired["avg_accept_rate"] == pytest.approx(0.55)
    run = wait_until(lambda: rows(pg_url, TrainingRun, TrainingRun.trigger == Trigger.ACCEPT_RATE,
                                  TrainingRun.completed_at.is_not(None)), 120, what="the accept-rate retrain")[0]
    assert run.status == RunStatus.COMPLETED and run.outcome == "retrained"
    assert monitor()["status"] == "suppressed"  # the cooldown: no retrain every hour on slow-moving cycles
