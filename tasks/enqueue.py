"""Putting retrain work on the training queue. Call only after the transaction that created the
request committed, so a worker never looks for a row it cannot see yet. Also what a sender needs to
know about the other end: which workers consume a queue, and how a failed retrain comes back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from retrainer.config import Settings, get_settings
from retrainer.db import session_scope
from retrainer.db.records import Priority, Trigger
from retrainer.services import retrain_requests
from retrainer.services.retrain_requests import Enqueue
from retrainer.tasks.app import app

# Redis serves a queue's priority levels in this order, 0 first (kombu's default steps 0, 3, 6, 9): a
# high request waiting in the training queue runs before every normal one. Other brokers keep FIFO.
REDIS_PRIORITY = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}


def send_retrain(model: str, trigger: str = "manual", request_id: int | None = None, countdown: float = 0,
                 settings: Settings | None = None, via: Celery | None = None,
                 priority: Priority | str = Priority.NORMAL) -> AsyncResult:
    """Enqueue a retrain of `request_id`; without one, open (or join and pull forward) the model's
    request first, so every message names the request that makes it run exactly once."""
    settings = settings or get_settings()
    if request_id is None:
        with session_scope(settings.database_url) as session:
            request_id = retrain_requests.open_now(session, model, Trigger(trigger), requested_by=trigger).id
    limit = settings.model(model).training.time_limit_seconds
    level = REDIS_PRIORITY[Priority(priority)] if settings.broker_url.startswith(("redis", "rediss")) else None
    return (via or app).send_task(
        "training.retrain_model", kwargs={"model": model, "trigger": trigger, "request_id": request_id},
        queue="training", countdown=countdown or None, soft_time_limit=limit, time_limit=limit + 60, priority=level,
    )


def ask_retrain(model: str, requested_by: str, reason: str | None, priority: Priority, settings: Settings | None = None,
                via: Celery | None = None) -> tuple[dict[str, Any], AsyncResult]:
    """A person's retrain (`retrainer request`, POST /models/retrain): open or take over the model's
    request, commit it, then send it (the worker must find the row) with the request's priority, the
    higher of two when it took a waiting one over. Returns the request as `requests --json` shows it
    and the Celery result of its message."""
    settings = settings or get_settings()
    with session_scope(settings.database_url) as session:
        request = retrain_requests.ask(session, model, requested_by, reason, priority)
        session.flush()
        shown = retrain_requests.describe(request)
    sent = send_retrain(model, "manual", shown["id"], settings=settings, via=via, priority=shown["priority"])
    return shown, sent


def send_jobs(jobs: Iterable[Enqueue], trigger: str = "event", settings: Settings | None = None,
              via: Celery | None = None) -> list[str]:
    """Enqueue coalesced retrains; call only after the transaction that created them committed."""
    return [send_retrain(j.model, trigger, j.request_id, j.countdown, settings, via, j.priority).id for j in jobs]


class RetrainFailed(RuntimeError):
    """A retrain that ended in error (the run row and its request say why). The task raises it so Celery
    records FAILURE (Flower shows it failed); with the JSON serializer its args travel as a list and
    `AsyncResult.get()` re-raises this class in any process that imported this module."""

    def __init__(self, message: str, result: dict[str, Any] | None = None):
        super().__init__(message, result or {})

    @classmethod
    def of(cls, result: dict[str, Any]) -> RetrainFailed:
        """From a retrain's result whose status is "error": the one-line reason names the model and run."""
        run = f" (run {result['run_id']})" if result.get("run_id") else ""
        return cls(f"retrain of {result['model']!r} failed{run}: {result['message']}", result)

    @property
    def result(self) -> dict[str, Any]:
        """The retrain's result (`status` "error", `message`, `run_id` ...), as `retrain --json` shows it."""
        return self.args[1]

    def __str__(self) -> str:
        return self.args[0]


class _Found(Exception):
    pass


def workers_on(queue: str, via: Celery | None = None, timeout: float = 2.0) -> dict[str, list[str]] | None:
    """The workers that answered Celery's remote control, each with the queues it consumes; the search
    stops at the first one that consumes `queue`. {} when no worker answered; None when this broker
    cannot tell: without a fanout exchange a worker runs no remote control (the same test Celery makes).

    `timeout` is how long to wait for the next reply, so "no consumer" costs about that long; kombu's
    filesystem transport has fanout since kombu 5.3 (a dead worker's binding stays in its control folder,
    and each broadcast leaves one expired message file for it)."""
    target = via or app
    seen: dict[str, list[str]] = {}

    def on_reply(reply: dict[str, list[dict[str, Any]]]) -> None:
        for worker, queues in reply.items():
            seen[worker] = [q["name"] for q in queues]
            if queue in seen[worker]:
                raise _Found  # out of kombu's reply loop, which would otherwise wait for the timeout

    with target.connection_for_write() as conn:
        if not conn.supports_exchange_type("fanout"):
            return None
        try:
            target.control.broadcast("active_queues", reply=True, timeout=timeout, callback=on_reply,
                                     connection=conn)
        except _Found:
            pass  # a worker named the queue: no need to wait for the others' replies
    return seen
