"""The per-event path in batches, on a real worker (Redis broker, PostgreSQL): one Celery message per
event, stored many per transaction, exactly once, bad ones kept with their reason, nothing lost when
the worker is killed holding a window of messages."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retrainer.db import session_scope
from retrainer.db.records import Observation, RetrainRequest, SystemEvent
from retrainer.demo import synthetic
from retrainer.tasks import inbox
from retrainer.tasks.app import EVENTS_WINDOW
from retrainer.tasks.producer import send_event, send_events
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import count, purchase

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]

_BATCH = re.compile(r"events batch: (\d+) messages")


def purchases(n: int, prefix: str) -> list[dict[str, Any]]:
    end = datetime.now(UTC) - timedelta(minutes=1)
    return synthetic.as_purchase_events(synthetic.generate(n, end - timedelta(days=3), end, seed=5), "ctr", prefix)


def events_counted(url: str) -> int:
    """Events the retrain requests were told about: coalesced in the transaction that stored them."""
    with session_scope(url) as session:
        return int(session.scalar(sa.select(sa.func.coalesce(sa.func.sum(RetrainRequest.event_count), 0))))


def test_3000_messages_are_stored_once_in_a_few_transactions(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, models={"ctr": model_config(debounce_seconds=3600)})
    app = make_celery(settings)
    worker = start_worker(settings, queues="events", concurrency=2)
    stats = app.control.inspect(timeout=5).stats() or {}
    # the events worker's window (tasks/app.py), not the default of one message per process
    assert [s["prefetch_count"] for s in stats.values()] == [EVENTS_WINDOW]

    good = purchases(2950, "batch")
    bad = {  # sent raw, as a producer that bypasses send_event would
        "event: not valid JSON": "hello",
        "features: missing": {"type": "purchase", "model": "ctr"},
        "value: nan is not a finite number": purchase() | {"value": float("nan")},
        "event: nested deeper than 2 levels": "[" * 3000 + "]" * 3000,
    }
    send_events(good[:1000], via=app)  # the same messages, pipelined
    for i, payload in enumerate(good[1000:], start=1000):
        send_event(payload, via=app)
        if i % 100 == 0:  # malformed messages in the middle of the storm, not at its end
            app.send_task("events.ingest_event", args=[list(bad.values())[i // 100 % len(bad)]], queue="events")
    for payload in good[:20]:  # sent twice: the same event ids, new messages
        send_event(payload, via=app)
    for _ in range(10):  # valid, but for no configured model: rejected by the store
        send_event(purchase(model="no-such-model"), via=app)
    messages = len(good) + 20 + 20 + 10

    wait_until(lambda: count(pg_url, Observation) == len(good)
               and count(pg_url, SystemEvent, SystemEvent.kind == "event_rejected") == 30,
               timeout=60, interval=0.1, what="every event stored or rejected")
    batches = [int(n) for n in _BATCH.findall(worker.output())]
    assert sum(batches) == messages  # every message in exactly one batch: none lost, none handled twice
    assert len(batches) <= messages / 30, f"{len(batches)} batches for {messages} messages"

    assert events_counted(pg_url) == len(good)  # the duplicates asked for no retrain
    assert count(pg_url, RetrainRequest) == 1
    errors = [e.payload["error"] for e in _rejections(pg_url)]
    for reason in bad:
        assert sum(reason in e for e in errors) == 5, (reason, errors)
    assert sum("unknown model 'no-such-model'" in e for e in errors) == 10
    box = inbox.of(app)
    assert box is not None and box.client.hlen(box.key) == 0  # every receipt cleared, rejected ones too
    assert worker.alive() and "Traceback" not in worker.output()


def _rejections(url: str) -> list[SystemEvent]:
    with session_scope(url) as session:
        return list(session.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "event_rejected")))


def test_a_worker_killed_holding_a_window_loses_nothing(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, models={"ctr": model_config(debounce_seconds=3600)})
    app = make_celery(settings)
    box = inbox.of(app)
    assert box is not None
    sent = purchases(4000, "kill")
    for payload in sent:  # a backlog: the worker fills its window at once
        send_event(payload, via=app)

    first = start_worker(settings, queues="events", concurrency=2)
    unacked = f"{settings.redis_key_prefix}:unacked"
    # Killed mid-drain: after a first batch is stored and while the worker holds delivered messages (between
    # two windows it may hold none for a moment, and a kill then would test nothing).
    wait_until(lambda: count(pg_url, Observation) > 0 and box.client.hlen(unacked) > 0, timeout=30, interval=0.005,
               what="a stored batch and a held window")
    os.killpg(first.proc.pid, signal.SIGKILL)  # main process and pool children, mid-drain
    first.proc.wait()
    stored_at_kill = count(pg_url, Observation)
    held = box.client.hlen(unacked)  # delivered to the dead worker, never acked
    assert stored_at_kill < len(sent) and held > 0, (stored_at_kill, held)

    second = start_worker(settings, queues="events", concurrency=2)
    wait_until(lambda: box.client.llen(box.queue_key) == 0, timeout=30, what="the queue to drain")
    # What the dead worker held comes back only after Redis' visibility timeout (an hour), or from the
    # receipts: the reconciler's pass (beat, every 15 s) re-sends those overdue while the queue is empty.
    resent = box.resend_overdue(app, older_than=0)
    wait_until(lambda: count(pg_url, Observation) == len(sent), timeout=30, what="every sent event stored")
    assert count(pg_url, Observation) == events_counted(pg_url) == len(sent)  # exactly once
    assert count(pg_url, SystemEvent, SystemEvent.kind == "event_rejected") == 0
    wait_until(lambda: box.client.hlen(box.key) == 0, timeout=10, what="every receipt cleared")
    print(f"\nkilled with {stored_at_kill} of {len(sent)} stored and {held} messages held; {resent} re-sent from "
          f"their receipts; all {len(sent)} stored once")
    assert second.alive()


def test_a_pool_child_killed_mid_batch_hands_its_batch_back(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery
) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, models={"ctr": model_config(debounce_seconds=3600)})
    app = make_celery(settings)
    sent = purchases(3000, "child")
    for payload in sent:
        send_event(payload, via=app)
    worker = start_worker(settings, queues="events", concurrency=2)
    children = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(worker.proc.pid)], capture_output=True,
                                                   text=True, check=True).stdout.split()]
    wait_until(lambda: count(pg_url, Observation) > 0, timeout=30, interval=0.01, what="the first batch")
    for pid in children:  # whichever holds a batch now
        os.kill(pid, signal.SIGKILL)
    # Its batch comes straight back to the queue (not after the visibility timeout) and a new child stores it
    wait_until(lambda: count(pg_url, Observation) == len(sent), timeout=30, what="every sent event stored")
    assert events_counted(pg_url) == len(sent)
    wait_until(lambda: "handed back to the queue" in worker.output(), timeout=10, what="the hand-back logged")
    assert worker.alive()
