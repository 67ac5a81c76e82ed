"""retrainer.tasks.inbox: receipts of per-event messages on the real Redis, and their re-sending."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from retrainer.services.errors import InvalidEvent
from retrainer.tasks import inbox
from retrainer.tasks.producer import send_event, send_events
from tests.support import make_settings
from tests.tasks.helpers import purchase

pytestmark = pytest.mark.redis


@pytest.fixture
def app(tmp_path: Path, redis_url: str, make_celery):  # type: ignore[no-untyped-def]
    return make_celery(make_settings(tmp_path, "sqlite:///unused.db", broker_url=redis_url))


def test_no_inbox_without_redis(tmp_path: Path, make_celery) -> None:  # type: ignore[no-untyped-def]
    assert inbox.of(make_celery(make_settings(tmp_path, "sqlite:///unused.db"))) is None  # filesystem://


def test_send_event_writes_a_receipt_before_its_message(app) -> None:  # type: ignore[no-untyped-def]
    box = inbox.of(app)
    sent = send_event(purchase(event_id="e-1"), via=app)
    assert sent.event_id == "e-1"
    sent_at, document = json.loads(box.client.hget(box.key, "e-1"))
    assert abs(sent_at - time.time()) < 5 and json.loads(document)["event_id"] == "e-1"
    assert box.client.llen(box.queue_key) == 1  # the message itself
    box.forget_many(["e-1"])  # what the worker does once the event is stored or rejected
    assert box.client.hget(box.key, "e-1") is None


def test_overdue_receipts_are_resent_once_a_period_and_never_into_a_backlog(app) -> None:  # type: ignore[no-untyped-def]
    box = inbox.of(app)
    box.client.hset(box.key, "lost", json.dumps([time.time() - 600, '{"event_id":"lost"}']))
    box.client.hset(box.key, "recent", json.dumps([time.time(), '{"event_id":"recent"}']))
    box.client.rpush(box.queue_key, "a message still queued")
    assert box.resend_overdue(app, older_than=120) == 0  # a backlog: the lost one may be in it

    box.client.delete(box.queue_key)
    assert box.resend_overdue(app, older_than=120) == 1
    assert box.client.llen(box.queue_key) == 1  # the re-sent message
    box.client.delete(box.queue_key)
    assert box.resend_overdue(app, older_than=120) == 0  # its receipt was renewed: not again this period
    assert set(box.client.hkeys(box.key)) == {b"lost", b"recent"}


def test_send_events_pipelines_the_same_messages_with_their_receipts(app) -> None:  # type: ignore[no-untyped-def]
    box = inbox.of(app)
    event = purchase()
    sent = send_events([event | {"event_id": f"m-{i}"} for i in range(1200)], via=app)  # 3 round trips
    assert [s.event_id for s in sent] == [f"m-{i}" for i in range(1200)] and len({s.task_id for s in sent}) == 1200
    assert box.client.llen(box.queue_key) == 1200 and box.client.hlen(box.key) == 1200
    message = json.loads(box.client.lindex(box.queue_key, -1))  # the first sent (LPUSH: the far end)
    assert message["headers"]["task"] == "events.ingest_event" and message["headers"]["id"] == sent[0].task_id
    assert json.loads(box.client.hget(box.key, "m-0"))[1] == json.dumps(event | {"event_id": "m-0"},
                                                                        separators=(",", ":"))

    with pytest.raises(InvalidEvent, match="^event 1: type: "):
        send_events([event, {"type": "refund"}], via=app)
    assert box.client.llen(box.queue_key) == 1200  # a list with a bad event: nothing of it sent
