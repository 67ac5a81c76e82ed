"""Controls over HTTP: /retraining/stop and /start (pause and resume), /retraining/force (a person's
high-priority request on the real Redis training queue), POST /api/ml/check-retrain (the check run here,
its request sent as beat's task sends it), and the stored drift reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from retrainer.config import Settings
from retrainer.db.records import Priority, RequestStatus, RetrainRequest, Trigger
from retrainer.services import controls, drift_check
from tests.retrainer.api.conftest import AUTH, TOKEN, client_for, db
from tests.services.builders import make_version
from tests.support import make_settings, model_config
from tests.tasks.test_checks import log_outcomes


def requests_of(settings: Settings) -> list[RetrainRequest]:
    with db(settings) as s:
        return list(s.scalars(sa.select(RetrainRequest).order_by(RetrainRequest.id)))


def training_messages(settings: Settings) -> int:
    import redis

    server = redis.Redis.from_url(settings.broker_url)
    return sum(server.llen(k) for k in server.scan_iter(match=f"{settings.redis_key_prefix}:training*"))


def paused(settings: Settings, model: str) -> bool:
    with db(settings) as s:
        return controls.state(s, model)["paused"]


def test_stop_and_start_pause_and_resume_one_model_or_all(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, api_token=TOKEN, models={"ctr": model_config(), "roas": model_config()})
    with client_for(settings) as client:
        stopped = client.post("/retraining/stop", json={"reason": "feed outage", "by": "alice"}, headers=AUTH)
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "paused" and list(stopped.json()["models"]) == ["ctr", "roas"]
        assert {k: stopped.json()["models"]["roas"][k] for k in ("paused", "changed_by", "reason")} == {
            "paused": True, "changed_by": "alice", "reason": "feed outage"}
        assert paused(settings, "ctr") and paused(settings, "roas")
        assert client.get("/retraining/status").json()["models"]["ctr"]["state"]["paused"] is True

        started = client.post("/retraining/start", json={"model": "roas", "by": "bob"}, headers=AUTH)
        assert started.status_code == 200 and list(started.json()["models"]) == ["roas"]
        assert (paused(settings, "ctr"), paused(settings, "roas")) == (True, False)
        assert client.post("/retraining/start", headers=AUTH).json()["status"] == "active"  # no body: every model
        assert not paused(settings, "ctr")

        assert client.post("/retraining/stop", json={"model": "crt"}, headers=AUTH).json() == {
            "detail": "unknown model 'crt'; configured models: ctr, roas"}
        assert client.post("/retraining/stop", json={"modle": "ctr"}, headers=AUTH).status_code == 422
        assert client.post("/retraining/stop").status_code == 401
    assert not paused(settings, "ctr")


@pytest.mark.redis
def test_force_is_a_persons_high_priority_request_even_while_paused(tmp_path: Path, db_url: str,
                                                                    redis_url: str) -> None:
    settings = make_settings(tmp_path, db_url, broker_url=redis_url, api_token=TOKEN)
    with client_for(settings) as client:
        client.post("/retraining/stop", json={"model": "ctr"}, headers=AUTH).raise_for_status()
        forced = client.post("/retraining/force", json={"reason": "new campaign", "by": "alice"}, headers=AUTH)
        assert forced.status_code == 202, forced.text
        body = forced.json()
        assert (body["priority"], body["trigger"], body["requested_by"], body["status"]) == (
            "high", "manual", "alice", "pending")
        assert client.post("/retraining/force", params={"model": "crt"}, headers=AUTH).status_code == 404
    [row] = requests_of(settings)
    assert (row.id, row.priority, row.trigger, row.reason) == (body["request_id"], Priority.HIGH, Trigger.MANUAL,
                                                               "new campaign")
    assert training_messages(settings) == 1


@pytest.mark.redis
def test_check_retrain_runs_the_check_here_and_sends_the_request_as_beat_does(tmp_path: Path, db_url: str,
                                                                              redis_url: str) -> None:
    cfg = model_config(accuracy={"cooldown_hours": 0, "mae_threshold": 0.02, "min_samples": 50})
    settings = make_settings(tmp_path, db_url, broker_url=redis_url, api_token=TOKEN, models={"ctr": cfg})
    with db(settings) as s:
        make_version(s, settings, 1, production=True)
    with client_for(settings) as client:
        early = client.post("/api/ml/check-retrain", json={"model": "ctr"}, headers=AUTH)
        assert early.status_code == 200, early.text
        assert (early.json()["status"], early.json()["retrain_enqueued"]) == ("insufficient_data", False)

        log_outcomes(settings.database_url, "ctr", "ctr-v1", 60, offset=0.05, seed=11)  # off by 0.05 > 0.02
        client.post("/retraining/stop", json={"reason": "holiday freeze"}, headers=AUTH).raise_for_status()
        held = client.post("/api/ml/check-retrain", params={"model": "ctr", "trigger": "accuracy"}, headers=AUTH).json()
        assert (held["status"], held["retrain_enqueued"]) == ("retrain_needed", False)
        assert "paused" in held["suppressed"]
        assert requests_of(settings) == [] and training_messages(settings) == 0

        client.post("/retraining/start", headers=AUTH).raise_for_status()
        degraded = client.post("/api/ml/check-retrain", headers=AUTH).json()  # one model: no model needed
        assert (degraded["status"], degraded["retrain_enqueued"]) == ("retrain_needed", True), degraded
        assert degraded["current_accuracy"]["ctr_mae"] == pytest.approx(0.05, abs=1e-6)

        assert client.post("/api/ml/check-retrain", params={"trigger": "nope"}, headers=AUTH).status_code == 422
        assert client.post("/api/ml/check-retrain", json={"model": "crt"}, headers=AUTH).status_code == 404
        assert client.post("/api/ml/check-retrain").status_code == 401
    [row] = requests_of(settings)
    assert (row.trigger, row.status, row.requested_by) == (Trigger.ACCURACY, RequestStatus.PENDING, "api")
    assert training_messages(settings) == 1


def test_drift_reports_as_drift_report_shows_them(client: TestClient, api_settings: Settings) -> None:
    assert client.get("/drift/reports").json() == {"reports": [], "count": 0}
    with db(api_settings) as s:
        make_version(s, api_settings, 1, production=True)
    for _ in range(2):
        with db(api_settings) as s:
            drift_check.check(s, "ctr", api_settings.model("ctr"))

    listed = client.get("/drift/reports", params={"model": "ctr", "limit": 1}).json()
    assert listed["count"] == 1
    newest = listed["reports"][0]
    with db(api_settings) as s:
        assert newest == drift_check.report_dict(drift_check.latest(s, "ctr"))  # `retrainer drift-report ctr --json`
    assert newest["status"] == "no_reference" and newest["version_id"] == "ctr-v1"
    assert [r["id"] for r in client.get("/drift/reports").json()["reports"]] == [newest["id"], newest["id"] - 1]
    assert client.get(f"/drift/reports/{newest['id']}").json() == newest
    missing = client.get("/drift/reports/999")
    assert (missing.status_code, missing.json()) == (404, {"detail": "drift report 999 not found"})
    assert client.get("/drift/reports", params={"model": "crt"}).status_code == 404
    assert client.get("/drift/reports/abc").status_code == 422
