"""GET /metrics, parsed as Prometheus parses it (prometheus_client's parser), against rows made on SQLite
and PostgreSQL; queue lengths on the embedded broker and on the real Redis."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from retrainer.config import Settings
from retrainer.db.migrate import upgrade
from retrainer.db.records import (
    DriftReport,
    ModelVersion,
    Priority,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    TrainingRun,
    Trigger,
)
from retrainer.models.base import Live
from retrainer.services import predictions
from tests.retrainer.api.conftest import AUTH, TOKEN, client_for, db
from tests.support import make_settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, **kwargs: Any) -> Samples:
    answer = client.get("/metrics", **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def named(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


PROMOTED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def version(number: int, production: bool = False) -> ModelVersion:
    return ModelVersion(version_id=f"ctr-v{number}", model="ctr", number=number, family="ctr", algorithm="xgboost",
                        is_production=production, promoted_at=PROMOTED if production else None,
                        num_training_samples=100, training_duration_seconds=1.0, hyperparameters={}, metrics={},
                        artifact_uri=f"/nowhere/ctr-v{number}", artifact_sha256="0" * 64, library_versions={})


def run(run_id: str, status: RunStatus, trigger: Trigger, outcome: str | None, duration: float | None,
        model: str = "ctr") -> TrainingRun:
    return TrainingRun(run_id=run_id, model=model, trigger=trigger, status=status, outcome=outcome,
                       duration_seconds=duration, started_at=datetime.now(UTC) - timedelta(hours=1))


def served(settings: Settings, version_id: str, predicted: float, actual: float, ago: timedelta) -> None:
    """A prediction with its outcome, through the service the event path uses (the hourly rollup moves too)."""
    with db(settings) as s:
        record = predictions.log_prediction(s, "ctr", {"x": 1.0}, predicted, version_id=version_id,
                                            at=datetime.now(UTC) - ago, kind=Live.REGRESSION)
        s.flush()
        predictions.record_outcome(s, record.prediction_id, actual)


def test_a_scrape_counts_the_rows(client: TestClient, api_settings: Settings) -> None:
    with db(api_settings) as s:
        s.add_all([version(1), version(2, production=True)])
        s.flush()
        s.add_all([
            run("r1", RunStatus.COMPLETED, Trigger.SCHEDULE, "retrained", 4.0),
            run("r2", RunStatus.COMPLETED, Trigger.ACCURACY, "kept", 40.0),
            run("r3", RunStatus.FAILED, Trigger.MANUAL, "error", 700.0),
            run("r4", RunStatus.SKIPPED, Trigger.SCHEDULE, "insufficient_data", 0.5),
            run("r5", RunStatus.RUNNING, Trigger.DRIFT, None, None),
            run("r6", RunStatus.COMPLETED, Trigger.MANUAL, "retrained", 2.0, model="gone"),  # no longer configured
            RetrainRequest(model="ctr", trigger=Trigger.MANUAL, requested_by="alice", priority=Priority.HIGH),
            RetrainRequest(model="ctr", trigger=Trigger.DRIFT, requested_by="drift", status=RequestStatus.COMPLETED),
            DriftReport(model="ctr", checked_at=datetime.now(UTC) - timedelta(hours=2), status="drift_detected",
                        drifted=True, drifted_share=0.5, share_threshold=0.5),
            DriftReport(model="ctr", checked_at=datetime.now(UTC) - timedelta(minutes=5), status="no_drift",
                        drifted=False, drifted_share=0.25, share_threshold=0.5),
        ])
    # Production's outcomes in the 7-day window: whole hours from the rollup, the current hour from the records
    for predicted, actual, ago in ((0.10, 0.15, timedelta(hours=3)), (0.10, 0.05, timedelta(hours=3)),
                                   (0.10, 0.10, timedelta(hours=3)), (0.20, 0.30, timedelta(seconds=30))):
        served(api_settings, "ctr-v2", predicted, actual, ago)
    served(api_settings, "ctr-v1", 0.0, 1.0, timedelta(hours=1))  # not production: not counted
    served(api_settings, "ctr-v2", 0.0, 1.0, timedelta(days=8))  # before the window
    context = client.app.state.context  # type: ignore[attr-defined]
    for queue, n in (("training", 2), ("checks", 1)):  # the embedded broker: files in its queue folder
        for _ in range(n):
            context.celery().send_task("checks.reconcile", queue=queue)

    m = scrape(client)

    assert named(m, "retrainer_training_runs_total") == {
        frozenset({"model": "ctr", "status": s, "trigger": t}.items()): 1.0
        for s, t in (("completed", "schedule"), ("completed", "accuracy"), ("failed", "manual"), ("skipped", "schedule"))
    } | {frozenset({"model": "gone", "status": "completed", "trigger": "manual"}.items()): 1.0}
    assert named(m, "retrainer_training_runs_active") == {frozenset({"model": "ctr", "status": "running"}.items()): 1.0}
    assert named(m, "retrainer_decisions_total") == {
        frozenset({"model": model, "outcome": outcome}.items()): 1.0
        for model, outcome in (("ctr", "retrained"), ("ctr", "kept"), ("ctr", "error"), ("ctr", "insufficient_data"),
                               ("gone", "retrained"))}

    buckets = {labels["le"]: value for labels, value in
               ((dict(k), v) for k, v in named(m, "retrainer_retrain_duration_seconds_bucket").items())
               if labels["model"] == "ctr"}
    assert buckets == {"1.0": 1, "5.0": 2, "15.0": 2, "30.0": 2, "60.0": 3, "120.0": 3, "300.0": 3, "600.0": 3,
                       "1200.0": 4, "1800.0": 4, "3600.0": 4, "+Inf": 4}
    assert sample(m, "retrainer_retrain_duration_seconds_count", model="ctr") == 4
    assert sample(m, "retrainer_retrain_duration_seconds_sum", model="ctr") == 744.5

    assert named(m, "retrainer_production_version_info") == {
        frozenset({"model": "ctr", "version": "ctr-v2"}.items()): 1.0}
    assert sample(m, "retrainer_production_version_number", model="ctr") == 2
    assert sample(m, "retrainer_production_promoted_timestamp_seconds", model="ctr") == PROMOTED.timestamp()

    assert sample(m, "retrainer_live_outcomes", model="ctr", version="ctr-v2") == 4
    assert sample(m, "retrainer_live_metric", model="ctr", version="ctr-v2", metric="mae") == pytest.approx(0.05)
    assert sample(m, "retrainer_live_metric", model="ctr", version="ctr-v2", metric="rmse") == pytest.approx(
        math.sqrt((0.05**2 + 0.05**2 + 0.1**2) / 4))
    assert sample(m, "retrainer_live_metric", model="ctr", version="ctr-v2", metric="within_20pct") == 0.25
    assert sample(m, "retrainer_live_threshold", model="ctr", metric="mae") == 0.02

    assert sample(m, "retrainer_drift_share", model="ctr") == 0.25  # the latest report, not the larger one
    assert sample(m, "retrainer_drift_detected", model="ctr") == 0
    assert sample(m, "retrainer_retrain_requests_pending", model="ctr") == 1

    assert sample(m, "retrainer_broker_up") == 1
    assert {dict(k)["queue"]: v for k, v in named(m, "retrainer_queue_messages").items()} == {
        "training": 2, "checks": 1, "events": 0, "notifications": 0}


def test_an_empty_database_scrapes_and_reads_follow_the_token_rule(tmp_path: Path, sqlite_url: str) -> None:
    upgrade(sqlite_url)
    settings = make_settings(tmp_path, sqlite_url, api_token=TOKEN, api_read_token_required=True)
    with client_for(settings) as client:
        assert client.get("/metrics").status_code == 401
        m = scrape(client, headers=AUTH)
    assert named(m, "retrainer_training_runs_total") == {} and named(m, "retrainer_production_version_info") == {}
    assert sample(m, "retrainer_live_outcomes", model="ctr", version="") == 0  # no production: every record
    assert named(m, "retrainer_live_metric") == {}  # nothing measurable
    assert sample(m, "retrainer_retrain_requests_pending", model="ctr") == 0


@pytest.mark.redis
def test_queue_lengths_on_redis_count_every_priority(tmp_path: Path, sqlite_url: str, redis_url: str) -> None:
    import redis

    upgrade(sqlite_url)
    settings = make_settings(tmp_path, sqlite_url, broker_url=redis_url)
    server = redis.Redis.from_url(redis_url)
    try:
        with client_for(settings) as client:
            app = client.app.state.context.celery()  # type: ignore[attr-defined]
            for priority in (0, 3, 6, 6):  # high, normal, low: three lists under the prefix
                app.send_task("training.retrain_model", kwargs={"model": "ctr"}, queue="training", priority=priority)
            app.send_task("checks.reconcile", queue="checks")
            m = scrape(client)
        lists = [k for k in server.scan_iter(match=f"{settings.redis_key_prefix}:training*")
                 if server.type(k) == b"list"]
        assert len(lists) == 3 and sum(server.llen(k) for k in lists) == 4
        assert {dict(k)["queue"]: v for k, v in named(m, "retrainer_queue_messages").items()} == {
            "training": 4, "checks": 1, "events": 0, "notifications": 0}
        assert sample(m, "retrainer_broker_up") == 1
    finally:
        for key in server.scan_iter(match=f"{settings.redis_key_prefix}:*"):
            server.delete(key)
        server.close()


def test_a_dead_broker_leaves_the_database_figures_and_a_dead_database_is_503(tmp_path: Path, sqlite_url: str) -> None:
    upgrade(sqlite_url)
    with client_for(make_settings(tmp_path, sqlite_url, broker_url="redis://127.0.0.1:1/0")) as client:
        m = scrape(client)
    assert sample(m, "retrainer_broker_up") == 0 and named(m, "retrainer_queue_messages") == {}
    assert sample(m, "retrainer_retrain_requests_pending", model="ctr") == 0

    dead = make_settings(tmp_path, "postgresql+psycopg://retrainer:pw@127.0.0.1:1/retrainer")
    with client_for(dead) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("database unreachable at postgresql+psycopg://retrainer:***@127.0.0.1:1/")
