"""checks.check_drift on a real worker (Redis broker, PostgreSQL): the inputs a model served drift from
the profile its production version recorded at training time, so the check stores a drift report and
opens a drift-triggered retrain whose run names the report; inputs like the training rows stay silent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retrainer.db import session_scope
from retrainer.db.records import (
    DriftReport,
    FeatureProfile,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    TrainingRun,
    Trigger,
)
from retrainer.demo import synthetic
from retrainer.services import predictions
from retrainer.tasks.enqueue import send_retrain
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import count, rows, seed_observations

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]

SHIFT = {"hook_strength": 0.5, "thumbnail_score": 0.5, "video_length_s": 20.0}  # 3 of the 5 features


def serve(url: str, model: str, n: int, seed: int, shift: dict[str, float] | None = None) -> None:
    """`n` predictions logged over the last 12 hours, their features drawn as the training rows were
    (over 30 days, so hour_of_day is spread alike), moved by `shift`."""
    now = datetime.now(UTC)
    generated = synthetic.generate(n, now - timedelta(days=30), now, seed=seed)
    with session_scope(url) as session:
        for i, row in enumerate(generated):
            features = {k: v + (shift or {}).get(k, 0.0) for k, v in row.features.items()}
            predictions.log_prediction(session, model, features, 0.03, version_id=f"{model}-v1",
                                       prediction_id=f"{model}-d{i}", at=now - timedelta(seconds=30 + 30 * i))


def test_drift_opens_a_retrain_whose_run_names_the_report_and_no_drift_stays_silent(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    cfg = model_config()  # the default drift check: 1,000 recent inputs at least, and as many training rows
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, models={"ctr": cfg, "ctr_ok": cfg})
    seed_observations(pg_url, 1500, model="ctr", seed=1)  # 1,200 training rows: the reference
    seed_observations(pg_url, 1500, model="ctr_ok", seed=2)
    app = make_celery(settings)
    start_worker(settings, concurrency=2)

    def check(model: str) -> dict:
        return app.send_task("checks.check_drift", kwargs={"model": model}, queue="checks").get(timeout=60)

    for model in ("ctr", "ctr_ok"):
        assert send_retrain(model, settings=settings, via=app).get(timeout=120)["status"] == "retrained"
        assert count(pg_url, FeatureProfile, FeatureProfile.version_id == f"{model}-v1") == 1

    early = check("ctr")  # nothing served yet: no verdict, recorded
    assert early["status"] == "insufficient_data" and early["retrain_enqueued"] is False, early

    serve(pg_url, "ctr", 1200, seed=11, shift=SHIFT)
    serve(pg_url, "ctr_ok", 1200, seed=12)

    fired = check("ctr")
    assert fired["status"] == "retrain_needed" and fired["retrain_enqueued"] is True, fired
    assert fired["drifted_share"] == pytest.approx(0.6) and fired["rows"] == 1200
    assert {n for n, f in fired["features"].items() if f["drifted"]} == set(SHIFT)
    (report,) = rows(pg_url, DriftReport, DriftReport.id == fired["drift_report_id"])
    assert (report.model, report.version_id, report.status, report.drifted) == ("ctr", "ctr-v1", "drift_detected", True)

    run = wait_until(lambda: rows(pg_url, TrainingRun, TrainingRun.trigger == Trigger.DRIFT,
                                  TrainingRun.completed_at.is_not(None)), 120, what="the drift-triggered retrain")[0]
    assert run.model == "ctr" and run.status == RunStatus.COMPLETED and run.drift_report_id == report.id
    (request,) = rows(pg_url, RetrainRequest, RetrainRequest.trigger == Trigger.DRIFT)
    assert request.drift_report_id == report.id and request.run_id == run.run_id
    assert request.status == RequestStatus.COMPLETED
    assert count(pg_url, FeatureProfile, FeatureProfile.version_id == run.version_id) == 1  # the new version's own

    again = check("ctr")  # the inputs still drift, but the run it just started is within the cooldown
    assert again["status"] == "suppressed" and again["retrain_enqueued"] is False, again
    assert "within the cooldown (24 h)" in again["message"]

    calm = check("ctr_ok")
    assert calm["status"] == "no_retrain_needed" and calm["retrain_enqueued"] is False, calm
    assert calm["drifted_share"] == 0.0 and calm["rows"] == 1200, calm["features"]
    assert rows(pg_url, DriftReport, DriftReport.id == calm["drift_report_id"])[0].status == "no_drift"
    assert count(pg_url, RetrainRequest, RetrainRequest.model == "ctr_ok") == 1  # only the first retrain's
    assert count(pg_url, TrainingRun, TrainingRun.trigger == Trigger.DRIFT) == 1
