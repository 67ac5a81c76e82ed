"""retrainer.tasks.broker: kombu's Redis transport taking messages in bulk, on the real Redis (no worker)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from retrainer.tasks import broker

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f"rt-bulk-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


def connect(redis_url: str, prefix: str) -> Connection:
    return Connection(redis_url, transport=broker.Transport, transport_options={"global_keyprefix": prefix})


def consume(conn: Connection, queue: Queue, prefetch: int) -> tuple[Consumer, list[Any]]:
    received: list[Any] = []
    consumer = Consumer(conn.channel(), [queue], callbacks=[lambda body, message: received.append(message)])
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    return consumer, received


def test_one_brpop_takes_the_window_and_one_round_trip_acknowledges_it(redis_url: str, prefix: str) -> None:
    queue = Queue("events", Exchange("events", type="direct"), routing_key="events")
    client = redis.Redis.from_url(redis_url)
    with connect(redis_url, prefix) as conn:
        producer = Producer(conn.channel())
        for i in range(10):
            producer.publish({"n": i}, routing_key="events", declare=[queue], serializer="json")
        consumer, received = consume(conn, queue, prefetch=4)
        conn.drain_events(timeout=2)

        # one BRPOP and one script: the window's 4, in order, each recorded as unacknowledged
        assert [m.payload["n"] for m in received] == [0, 1, 2, 3]
        assert client.llen(f"{prefix}events") == 6
        assert client.hlen(f"{prefix}unacked") == client.zcard(f"{prefix}unacked_index") == 4
        unacked = json.loads(client.hget(f"{prefix}unacked", received[1].delivery_tag))
        assert unacked[1:] == ["", "events"] and unacked[0]["properties"]["delivery_tag"] == received[1].delivery_tag
        assert not consumer.channel.qos.can_consume()  # a full window: BRPOP waits for an ack

        consumer.channel.qos.forget_many([m.delivery_tag for m in received[:3]])
        for message in received[:3]:
            message.ack()
        assert client.hlen(f"{prefix}unacked") == 1
        received[3].reject(requeue=True)  # back to the queue, from its unacked record
        assert client.hlen(f"{prefix}unacked") == 0 and client.llen(f"{prefix}events") == 7


def test_a_window_of_one_takes_nothing_more_and_the_script_leaves_what_it_cannot_read(
    redis_url: str, prefix: str
) -> None:
    queue = Queue("training", Exchange("training", type="direct"), routing_key="training")
    client = redis.Redis.from_url(redis_url)
    with connect(redis_url, prefix) as conn:
        producer = Producer(conn.channel())
        for i in range(4):
            # Python's JSON writes a lone surrogate as an escape Redis' cjson refuses (n=2)
            producer.publish({"n": i}, routing_key="training", declare=[queue], serializer="json",
                             headers={"argsrepr": "k\ud800" if i == 2 else "ok"})
        consumer, received = consume(conn, queue, prefetch=1)
        conn.drain_events(timeout=2)
        assert [m.payload["n"] for m in received] == [0] and client.llen(f"{prefix}training") == 3

        consumer.qos(prefetch_count=4)
        conn.drain_events(timeout=2)  # BRPOP: n=1; the script stops at n=2 and leaves it first in line
        assert [m.payload["n"] for m in received] == [0, 1] and client.llen(f"{prefix}training") == 2
        conn.drain_events(timeout=2)  # kombu's own BRPOP reads n=2, then the script takes n=3
        assert [m.payload["n"] for m in received] == [0, 1, 2, 3]
        assert received[2].headers["argsrepr"] == "k\ud800"
        assert client.hlen(f"{prefix}unacked") == 4 and client.llen(f"{prefix}training") == 0


def test_a_receipt_is_written_in_the_same_transaction_as_its_message(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with connect(redis_url, prefix) as conn:
        Producer(conn.channel()).publish({"n": 1}, routing_key="events", serializer="json",
                                         **{broker.WITH_HSET: ["inbox:events", "e-1", "[1, \"doc\"]"]})
    assert client.hget(f"{prefix}inbox:events", "e-1") == b'[1, "doc"]'
    (raw,) = client.lrange(f"{prefix}events", 0, -1)
    assert broker.WITH_HSET not in json.loads(raw)["properties"]  # not part of the message
