"""How the events worker settles a batch's messages (tasks/events.py), without a broker or a worker:
acknowledged once committed, handed back when the database stayed away or the child died."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from celery_batches import SimpleRequest

from retrainer.tasks import events as task


class FakeQoS:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def forget_many(self, tags: list[str]) -> None:
        self.forgotten += tags


class FakeChannel:
    def __init__(self) -> None:
        self.qos = FakeQoS()


class FakeRequest:
    def __init__(self, task_id: str, channel: FakeChannel, redelivered: bool = False) -> None:
        self.id = task_id
        self.delivery_info = {"redelivered": redelivered}
        self.message = type("Message", (), {"channel": channel, "delivery_tag": f"tag-{task_id}"})()
        self.settled: str | None = None

    def acknowledge(self) -> None:
        self.settled = "ack"

    def reject(self, requeue: bool = False) -> None:
        self.settled = "requeue" if requeue else "reject"


def batch(*redelivered: bool) -> tuple[FakeChannel, list[FakeRequest]]:
    channel = FakeChannel()
    return channel, [FakeRequest(f"t{i}", channel, again) for i, again in enumerate(redelivered)]


def test_a_committed_batch_is_acknowledged_in_one_round_trip() -> None:
    channel, requests = batch(False, False, True)
    task._settle(requests, {"requeue": [], "stored": 3})  # type: ignore[arg-type]
    assert [r.settled for r in requests] == ["ack", "ack", "ack"]
    assert channel.qos.forgotten == ["tag-t0", "tag-t1", "tag-t2"]


def test_what_the_task_could_not_store_goes_back_to_the_queue() -> None:
    channel, requests = batch(False, False)
    task._settle(requests, {"requeue": ["t1"]})  # type: ignore[arg-type]
    assert [r.settled for r in requests] == ["ack", "requeue"]
    assert channel.qos.forgotten == ["tag-t0"]


@pytest.mark.parametrize("outcome", [None, "child died"])
def test_a_lost_batch_is_handed_back_once_then_acknowledged(outcome: Any) -> None:
    channel, requests = batch(False, True)
    if outcome is None:
        task._settle(requests, None)  # type: ignore[arg-type]  (the task raised: celery-batches returns None)
    else:
        task._hand_back(requests, outcome)  # type: ignore[arg-type]
    # the first time back to the queue; a message already handed back once is let go (a poison batch
    # cannot loop; on Redis its receipt brings the event back after resend_after_seconds)
    assert [r.settled for r in requests] == ["requeue", "ack"]
    assert channel.qos.forgotten == ["tag-t1"]


def test_a_batch_rides_a_database_outage_out_then_hands_itself_back(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def outage(*_: Any, **__: Any) -> Any:
        calls.append(1)
        raise sa.exc.OperationalError("INSERT", {}, Exception("connection refused"))

    monkeypatch.setattr(task.events, "ingest", outage)
    monkeypatch.setattr(task, "RETRY_SECONDS", 1.5)
    requests = [SimpleRequest(f"t{i}", task.inbox.TASK, [json.dumps({"type": "outcome"})], {}, {}, "h", True,
                              None, None, {}) for i in range(3)]
    result = task.ingest_event.run(requests)
    assert result == {"requeue": ["t0", "t1", "t2"]}
    assert len(calls) >= 2  # retried in place before giving the batch back
