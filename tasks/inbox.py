"""The per-event path's receipts on Redis: each event sent and not yet ingested.

kombu's Redis transport takes a message off its queue and records it as unacknowledged in two
commands, so a Redis restart between them leaves the message only in the worker's memory
(celery/kombu#305); and a worker drops the messages it had reserved when its connection breaks (they
come back only after the visibility timeout, an hour). Measured over Redis restarts during a storm:
about one sent event in a thousand was lost. So `send_event` first writes the event into one Redis
hash, the worker deletes it once the event is stored or rejected, and the reconciler re-sends what
has waited longer than `recovery.resend_after_seconds` while the events queue is empty (with a
backlog, the messages may simply still be queued). Ingestion is idempotent by event id, so a
re-send at worst stores nothing twice.

Only for a Redis broker: the embedded broker has no restarts to survive, and RabbitMQ acknowledges
for real.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import redis
from celery import Celery
from redis.backoff import ConstantBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

_clients: dict[tuple[int, str], redis.Redis] = {}


@dataclass(frozen=True)
class Inbox:
    client: redis.Redis
    key: str  # hash: event id -> [sent at, JSON document]
    queue_key: str  # the events queue's list

    def record(self, event_id: str, document: str) -> None:
        self.client.hset(self.key, event_id, json.dumps([time.time(), document]))

    def forget(self, event_id: str) -> None:
        self.client.hdel(self.key, event_id)

    def resend_overdue(self, app: Celery, older_than: float, limit: int = 10_000) -> int:
        """Re-send events waiting longer than `older_than` seconds; each at most once a period."""
        if self.client.llen(self.queue_key):
            return 0  # a backlog: their messages may still be in it
        cutoff, resent = time.time() - older_than, 0
        for event_id, raw in self.client.hscan_iter(self.key, count=1000):
            sent_at, document = json.loads(raw)
            if sent_at > cutoff:
                continue
            self.record(event_id.decode(), document)  # a fresh time: the next re-send is a period away
            send(app, document)
            resent += 1
            if resent >= limit:
                break
        return resent


def send(app: Celery, document: str) -> str:
    """One event message; its task id. No result is kept (nobody waits for one)."""
    return app.send_task("events.ingest_event", args=[document], queue="events", ignore_result=True).id


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
    return Inbox(client, f"{prefix}inbox:events", f"{prefix}events")
