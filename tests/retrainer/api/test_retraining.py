"""POST /models/retrain queues a request as `retrainer request` does; /requests lists and cancels;
/retraining/status is `retrainer status --json`."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from retrainer.config import Settings
from retrainer.db.records import Priority, RequestStatus, RetrainRequest, Trigger
from tests.retrainer.api.conftest import AUTH, TOKEN, client_for, db
from tests.support import make_settings


def requests_of(settings: Settings) -> list[RetrainRequest]:
    with db(settings) as s:
        return list(s.scalars(sa.select(RetrainRequest).order_by(RetrainRequest.id)))


def queued_messages(settings: Settings) -> list[Path]:
    return sorted((settings.broker_folder / "queue").glob("*"))


def test_retrain_returns_at_once_with_a_pending_request_and_its_message(client: TestClient,
                                                                        api_settings: Settings) -> None:
    answer = client.post("/models/retrain", json={"model": "ctr", "reason": "new campaign", "priority": "high",
                                                  "requested_by": "alice"}, headers=AUTH)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["request_id"] == body["id"] and body["task_id"]
    assert (body["status"], body["priority"], body["requested_by"], body["reason"], body["trigger"]) == (
        "pending", "high", "alice", "new campaign", "manual")
    assert body["note"] == "follow it at /requests?model=ctr and /models/training-history?model=ctr"

    [row] = requests_of(api_settings)
    assert (row.id, row.status, row.trigger, row.priority, row.requested_by) == (
        body["request_id"], RequestStatus.PENDING, Trigger.MANUAL, Priority.HIGH, "alice")
    assert len(queued_messages(api_settings)) == 1  # the retrain message, on the embedded broker

    # A second person joins the one waiting request (one run serves both), as `retrainer request` does
    again = client.post("/models/retrain", json={"model": "ctr"}, headers=AUTH).json()
    assert again["request_id"] == body["request_id"] and again["priority"] == "high"
    assert len(requests_of(api_settings)) == 1

    listed = client.get("/requests", params={"model": "ctr", "status": "pending"}).json()
    assert listed["count"] == 1 and listed["requests"][0]["id"] == body["request_id"]
    assert client.get("/requests", params={"status": "cancelled"}).json() == {"requests": [], "count": 0}

    cancelled = client.post(f"/requests/{body['request_id']}/cancel", json={"by": "bob"}, headers=AUTH)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["error_message"]) == ("cancelled", "cancelled by bob")
    twice = client.post(f"/requests/{body['request_id']}/cancel", headers=AUTH)
    assert twice.status_code == 409
    assert twice.json() == {"detail": f"request {body['request_id']} is cancelled: only a pending request can be cancelled"}
    assert client.post("/requests/999/cancel", headers=AUTH).json() == {"detail": "no retrain request 999"}
    assert client.post("/requests/999/cancel", headers=AUTH).status_code == 404


def test_retrain_body_is_validated_and_the_model_known(client: TestClient, api_settings: Settings) -> None:
    missing = client.post("/models/retrain", json={"reason": "x"}, headers=AUTH)
    assert missing.status_code == 422 and missing.json()["message"] == "body.model: Field required"
    urgent = client.post("/models/retrain", json={"model": "ctr", "priority": "urgent"}, headers=AUTH)
    assert urgent.status_code == 422
    assert urgent.json()["message"] == "body.priority: Input should be 'low', 'normal' or 'high'"
    assert "urgent" not in urgent.text  # the rejected input is not echoed
    unknown = client.post("/models/retrain", json={"model": "crt"}, headers=AUTH)
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "unknown model 'crt'; configured models: ctr"})
    assert client.get("/requests", params={"status": "waiting"}).status_code == 422
    assert client.get("/requests", params={"model": "crt"}).status_code == 404
    assert requests_of(api_settings) == [] and queued_messages(api_settings) == []


def test_writes_need_the_configured_bearer_token(client: TestClient, tmp_path: Path, db_url: str) -> None:
    body = {"model": "ctr"}
    none = client.post("/models/retrain", json=body)
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert none.json() == {"detail": "writes need an `Authorization: Bearer <token>` header"}
    wrong = client.post("/models/retrain", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid bearer token"}
    basic = client.post("/models/retrain", json=body, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401

    # No token configured: writes are refused, saying how to allow them; reads still work
    with client_for(make_settings(tmp_path, db_url)) as open_client:
        refused = open_client.post("/models/retrain", json=body, headers=AUTH)
        assert refused.status_code == 403
        assert "set RETRAINER_API_TOKEN" in refused.json()["detail"]
        for path in ("/models/promote/ctr-v1", "/models/rollback/ctr", "/requests/1/cancel"):
            assert open_client.post(path, headers=AUTH).status_code == 403, path
        assert open_client.get("/requests").status_code == 200


@pytest.mark.redis
def test_retrain_through_redis_lands_on_the_training_queue(tmp_path: Path, db_url: str, redis_url: str) -> None:
    import redis

    settings = make_settings(tmp_path, db_url, broker_url=redis_url, api_token=TOKEN)
    with client_for(settings) as client:
        answer = client.post("/models/retrain", json={"model": "ctr", "priority": "low"}, headers=AUTH)
    assert answer.status_code == 202, answer.text
    server = redis.Redis.from_url(redis_url)
    keys = list(server.scan_iter(match=f"{settings.redis_key_prefix}:training*"))
    assert keys and sum(server.llen(k) for k in keys) == 1
    assert [r.status for r in requests_of(settings)] == [RequestStatus.PENDING]


def test_a_dead_broker_is_503_before_anything_is_written(tmp_path: Path, sqlite_url: str) -> None:
    from retrainer.db.migrate import upgrade

    upgrade(sqlite_url)
    settings = make_settings(tmp_path, sqlite_url, broker_url="redis://:pw@127.0.0.1:1/0", api_token=TOKEN)
    with client_for(settings) as client:
        answer = client.post("/models/retrain", json={"model": "ctr"}, headers=AUTH)
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("broker unreachable at redis://:***@127.0.0.1:1/0 (connection refused)")
    assert requests_of(settings) == []


def test_status_of_every_model(client: TestClient) -> None:
    shown = client.get("/retraining/status").json()
    assert list(shown["models"]) == ["ctr"] and shown["checked_at"]
    ctr = shown["models"]["ctr"]
    assert {"production", "live_accuracy", "last_run", "pending_requests", "state", "budget", "triggers",
            "drift"} <= set(ctr)
    assert ctr["production"] is None and ctr["pending_requests"] == 0
    assert client.get("/retraining/status", params={"model": "ctr"}).json()["models"].keys() == {"ctr"}
    assert client.get("/retraining/status", params={"model": "crt"}).status_code == 404
