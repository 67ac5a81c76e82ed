"""Producers over HTTP: POST /events onto the real Redis events queue (and stored by a real worker),
POST /predictions served by production as it is at that moment, POST /predictions/{id}/outcome."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from retrainer.config import Settings
from retrainer.db.records import Feedback, Observation, PredictionRecord, PredictionStatus
from retrainer.tasks import inbox
from tests.retrainer.api.conftest import AUTH, TOKEN, client_for, db
from tests.services.builders import make_version
from tests.support import make_settings, wait_until
from tests.tasks.helpers import purchase

FEATURES = {"hook_strength": 0.51, "thumbnail_score": 0.95, "video_length_s": 12.9, "hour_of_day": 3.0,
            "audience_size_log": 6.8}


def post(client: TestClient, path: str, body: Any) -> Any:
    """`body` as Python's json writes it: NaN and Infinity reach the API as the tokens a careless producer sends."""
    return client.post(path, content=json.dumps(body), headers=AUTH | {"Content-Type": "application/json"})


@pytest.mark.redis
def test_events_one_or_a_batch_land_on_the_events_queue_with_their_receipts(tmp_path: Path, db_url: str,
                                                                           redis_url: str) -> None:
    settings = make_settings(tmp_path, db_url, broker_url=redis_url, api_token=TOKEN)
    with client_for(settings) as client:
        one = post(client, "/events", purchase(event_id="e-one"))
        assert one.status_code == 202, one.text
        assert one.json()["accepted"] == 1 and one.json()["rejected"] == []
        assert one.json()["events"][0]["event_id"] == "e-one" and one.json()["events"][0]["task_id"]

        batch = post(client, "/events", [
            purchase(seed=1),
            {"type": "refund", "model": "ctr"},
            purchase(model="crt"),
            {"type": "outcome", "prediction_id": "p-1", "value": math.nan},
            {"type": "feedback", "model": "ctr", "cycle_id": "c-1", "accepted": 3, "rejected": 1, "event_id": "fb-1"},
        ])
        assert batch.status_code == 202, batch.text
        assert batch.json()["accepted"] == 2
        assert [e["index"] for e in batch.json()["events"]] == [0, 4]
        assert batch.json()["rejected"] == [
            {"index": 1, "error": "type: expected 'purchase', 'outcome', 'prediction' or 'feedback', got 'refund'"},
            {"index": 2, "error": "unknown model 'crt'; configured models: ctr"},
            {"index": 3, "error": "value: nan is not a finite number"}]

        # One event refused as a whole: the reason as a 422 naming the field, an unknown model 404
        bad = post(client, "/events", purchase(value=math.inf))
        assert (bad.status_code, bad.json()["message"]) == (422, "body.value: inf is not a finite number")
        assert post(client, "/events", purchase(model="crt")).json() == {
            "detail": "unknown model 'crt'; configured models: ctr"}
        assert post(client, "/events", "purchase").status_code == 422
        assert client.post("/events", json=purchase()).status_code == 401  # a write: the token is needed
        box = inbox.of(client.app.state.context.celery())  # type: ignore[attr-defined]
    assert box is not None
    assert box.client.llen(box.queue_key) == 3  # one message per accepted event, nothing for a refused one
    assert {"e-one", "fb-1"} <= {k.decode() for k in box.client.hkeys(box.key)}
    assert box.client.hlen(box.key) == 3
    with db(settings) as s:  # the worker stores them; the API only sent them
        assert s.scalar(sa.select(sa.func.count()).select_from(Observation)) == 0


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.worker
def test_events_sent_over_http_are_stored_by_a_real_worker(tmp_path: Path, pg_url: str, redis_url: str,
                                                           start_worker: Any) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, api_token=TOKEN)
    with db(settings) as s:
        make_version(s, settings, 1, production=True)
    start_worker(settings, queues="events", concurrency=1)
    with client_for(settings) as client:
        served = post(client, "/predictions", {"model": "ctr", "features": FEATURES, "prediction_id": "p-http"}).json()
        answer = post(client, "/events", [purchase(seed=i, event_id=f"buy-{i}") for i in range(3)] + [
            {"type": "outcome", "prediction_id": "p-http", "value": served["predicted"] + 0.01},
            {"type": "feedback", "model": "ctr", "cycle_id": "c-1", "accepted": 2, "rejected": 1}])
    assert answer.status_code == 202 and answer.json()["accepted"] == 5, answer.text

    def stored() -> bool:
        with db(settings) as s:
            return (s.scalar(sa.select(sa.func.count()).select_from(Observation).where(Observation.source == "event")) == 3
                    and s.scalar(sa.select(PredictionRecord.status).where(PredictionRecord.prediction_id == "p-http"))
                    == PredictionStatus.COMPLETED
                    and s.scalar(sa.select(sa.func.count()).select_from(Feedback)) == 1)

    wait_until(stored, timeout=60, what="the worker storing the events sent over HTTP")


def test_a_prediction_is_served_by_production_as_it_is_now(client: TestClient, api_settings: Settings) -> None:
    with db(api_settings) as s:
        make_version(s, api_settings, 1, production=True)
        make_version(s, api_settings, 2)
    first = post(client, "/predictions", {"model": "ctr", "features": FEATURES, "prediction_id": "p-1",
                                           "segments": {"region": "eu"}})
    assert first.status_code == 200, first.text
    assert {k: first.json()[k] for k in ("prediction_id", "model", "version_id")} == {
        "prediction_id": "p-1", "model": "ctr", "version_id": "ctr-v1"}
    assert isinstance(first.json()["predicted"], float)
    again = post(client, "/predictions", {"model": "ctr", "features": FEATURES, "prediction_id": "p-1"})
    assert (again.status_code, again.json()) == (409, {"detail": "prediction 'p-1' is already logged"})

    # The serving path reads production on every call: a promotion, then a rollback, serve the next one
    client.post("/models/promote/ctr-v2", json={"expected": "ctr-v1"}, headers=AUTH).raise_for_status()
    assert post(client, "/predictions", {"model": "ctr", "features": FEATURES}).json()["version_id"] == "ctr-v2"
    client.post("/models/rollback/ctr", headers=AUTH).raise_for_status()
    assert post(client, "/predictions", {"model": "ctr", "features": FEATURES}).json()["version_id"] == "ctr-v1"

    done = post(client, "/predictions/p-1/outcome", {"value": first.json()["predicted"] + 0.5})
    assert done.status_code == 200, done.text
    assert (done.json()["prediction_id"], done.json()["status"]) == ("p-1", "completed")
    assert done.json()["error"] == pytest.approx(0.5)
    with db(api_settings) as s:
        record = s.scalar(sa.select(PredictionRecord).where(PredictionRecord.prediction_id == "p-1"))
        assert (record.version_id, record.segments, record.status) == ("ctr-v1", {"region": "eu"},
                                                                         PredictionStatus.COMPLETED)
        assert s.scalar(sa.select(sa.func.count()).select_from(PredictionRecord)) == 3


def test_prediction_and_outcome_bodies_are_checked(client: TestClient, api_settings: Settings) -> None:
    none_yet = post(client, "/predictions", {"model": "ctr", "features": FEATURES})
    assert (none_yet.status_code, none_yet.json()) == (409, {"detail": "model 'ctr' has no production version yet"})
    with db(api_settings) as s:
        make_version(s, api_settings, 1, production=True)
    assert post(client, "/predictions", {"model": "crt", "features": FEATURES}).json() == {
        "detail": "unknown model 'crt'; configured models: ctr"}
    nan = post(client, "/predictions", {"model": "ctr", "features": FEATURES | {"hook_strength": math.nan}})
    assert (nan.status_code, nan.json()["message"]) == (422, "body.features.hook_strength: nan is not a finite number")
    short = post(client, "/predictions", {"model": "ctr", "features": {"hook_strength": 0.5}})
    assert short.status_code == 422 and short.json()["message"].startswith("body.features: missing feature column(s)")
    assert post(client, "/predictions", {"features": FEATURES}).json()["message"] == "body.model: Field required"
    assert post(client, "/predictions", {"model": "ctr", "features": FEATURES, "segment": {}}).status_code == 422
    assert client.post("/predictions", json={"model": "ctr", "features": FEATURES}).status_code == 401

    served = post(client, "/predictions", {"model": "ctr", "features": FEATURES}).json()["prediction_id"]
    for value, message in ((math.inf, "body.value: Input should be a finite number"),
                           (math.nan, "body.value: Input should be a finite number"),
                           ("0.2", "body.value: Input should be a valid number")):
        refused = post(client, f"/predictions/{served}/outcome", {"value": value})
        assert (refused.status_code, refused.json()["message"]) == (422, message)
    unknown_target = post(client, f"/predictions/{served}/outcome", {"value": 0.1, "targets": {"roas": 1.5}})
    assert unknown_target.json()["message"] == f"body.targets: 'roas' not served with prediction '{served}' (served: none)"
    missing = post(client, "/predictions/nope/outcome", {"value": 0.1})
    assert (missing.status_code, missing.json()) == (404, {"detail": "prediction 'nope' not found"})
    with db(api_settings) as s:  # nothing refused was recorded
        assert s.scalar(sa.select(PredictionRecord.status).where(PredictionRecord.prediction_id == served)) == \
            PredictionStatus.PREDICTED
