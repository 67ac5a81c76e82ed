"""The per-event path's receipts on Redis: each event sent and not yet ingested.

kombu's Redis transport takes a message off its queue and records it as unacknowledged in two
commands, so a Redis restart between them leaves the message only in the worker's memory
(celery/kombu#305); and a worker drops the messages it had reserved when its connection breaks (they
come back only after the visibility timeout, an hour). Measured over Redis restarts during a storm:
about one sent event in a thousand was lost. So `send_event` writes the event into one Redis hash,
just before its message and in the same round trip (tasks/broker.py), the worker deletes it once the
event is stored or rejected, and the reconciler re-sends what has waited longer than
`recovery.resend_after_seconds` while the events queue is empty (with a backlog, the messages may
simply still be queued). Ingestion is idempotent by event id, so a re-send at worst stores nothing
twice. (retrainer's transport takes most messages off the queue in an atomic script that records
them, which closes the first gap for those; the receipts still cover the first message of each take
and a worker that dies holding its window.)

Only for a Redis broker: the embedded broker has no restarts to survive, and RabbitMQ acknowledges
for real.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from kombu.utils.uuid import uuid
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from retrainer.tasks import broker

log = logging.getLogger(__name__)

TASK = "events.ingest_event"

_clients: dict[tuple[int, str], redis.Redis] = {}


@dataclass(frozen=True)
class Inbox:
    client: redis.Redis
    key: str  # hash: event id -> [sent at, JSON document]
    queue_key: str  # the events queue's list
    prefix: str = ""  # the broker's key prefix, which both keys start with

    def entry(self, event_id: str, document: str) -> list[str]:
        """The receipt as [hash key without the broker's prefix, field, value] (tasks/broker.py WITH_HSET)."""
        return [self.key.removeprefix(self.prefix), event_id, json.dumps([time.time(), document])]

    def forget_many(self, event_ids: Collection[str]) -> None:
        if event_ids:
            self.client.hdel(self.key, *event_ids)

    def resend_overdue(self, app: Celery, older_than: float, limit: int = 10_000) -> int:
        """Re-send events waiting longer than `older_than` seconds; each at most once a period."""
        if self.client.llen(self.queue_key):
            return 0  # a backlog: their messages may still be in it
        cutoff, resent = time.time() - older_than, 0
        for event_id, raw in self.client.hscan_iter(self.key, count=1000):
            sent_at, document = json.loads(raw)
            if sent_at > cutoff:
                continue
            send(app, document, event_id.decode())  # a fresh receipt time: the next re-send is a period away
            resent += 1
            if resent >= limit:
                break
        return resent


def send(app: Celery, document: str, event_id: str | None = None) -> str:
    """One event message (the task message `app.send_task` would publish); its task id. Published lean: no
    result is kept (nobody waits for one) and no task-sent event (a second publish per event, for a
    monitor that would then show thousands a second), on a producer from the app's pool. With an
    `event_id` on a Redis broker, its receipt is written too: in the message's own round trip when the
    transport is retrainer's (tasks/broker.py), else in a round trip of its own, first."""
    return send_many(app, [(event_id, document)])[0]


def send_many(app: Celery, events: list[tuple[str | None, str]], per_round_trip: int = 500) -> list[str]:
    """Many event messages, one per (event id, document), each exactly what `send` publishes; their task ids.
    More than one go through kombu's Producer.batch: up to `per_round_trip` messages and their receipts
    per round trip. A broker error raises; the round trips already made were sent, receipts and all."""
    box = of(app)
    task_ids = []
    with app.producer_or_acquire() as producer:
        ours = isinstance(producer.connection.transport, broker.Transport)
        pipelined = len(events) > 1 and ours and hasattr(producer, "batch")  # kombu >= 5.7
        with producer.batch(max_size=2 * per_round_trip) if pipelined else nullcontext():
            for event_id, document in events:
                task_ids.append(task_id := uuid())
                message = app.amqp.create_task_message(task_id, TASK, [document], {}, ignore_result=True)
                options: dict[str, Any] = {}
                receipt = box.entry(event_id, document) if box is not None and event_id is not None else None
                if ours:
                    # Redis takes the message into the queue's list by name: nothing to declare each time
                    options["declare"] = []
                    if receipt is not None:
                        options[broker.WITH_HSET] = receipt
                elif receipt is not None:
                    box.client.hset(box.key, receipt[1], receipt[2])  # type: ignore[union-attr]
                app.amqp.send_task_message(producer, TASK, message, queue="events", **options)
    return task_ids


def of(app: Celery) -> Inbox | None:
    """The inbox next to `app`'s broker queues, or None when the broker is not Redis."""
    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    key = (os.getpid(), url)  # a forked worker child opens its own connections
    client = _clients.get(key)
    if client is None:
        # Retried as kombu retries a publish (3 times, 0.2 s apart): a short restart delays, not refuses.
        client = _clients[key] = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, retry=Retry(ConstantBackoff(0.2), 3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError])
    prefix = (app.conf.broker_transport_options or {}).get("global_keyprefix", "")
    return Inbox(client, f"{prefix}inbox:events", f"{prefix}events", prefix)
