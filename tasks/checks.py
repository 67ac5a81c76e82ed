"""checks.* — scheduled checks: does a model need a retrain, and does anything need repair."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from kombu.exceptions import OperationalError as BrokerError

from retrainer.config import ModelConfig, get_settings
from retrainer.db.records import Trigger
from retrainer.services import accept_rate, accuracy, blocks, reconcile, retrain_requests
from retrainer.tasks import inbox
from retrainer.tasks.app import app
from retrainer.tasks.base import RetrainerTask
from retrainer.tasks.enqueue import send_jobs

log = logging.getLogger(__name__)


@app.task(name="checks.check_accuracy", base=RetrainerTask, bind=True, soft_time_limit=120, time_limit=180)
def check_accuracy(self: RetrainerTask, model: str) -> dict[str, Any]:
    return _check(self, model, Trigger.ACCURACY, "check_accuracy",
                  lambda session, cfg: accuracy.check(session, model, cfg.accuracy, cfg.family))


@app.task(name="checks.monitor", base=RetrainerTask, bind=True, soft_time_limit=120, time_limit=180)
def monitor(self: RetrainerTask, model: str) -> dict[str, Any]:
    """The hourly monitor: the accept-rate check (services/accept_rate.py)."""
    return _check(self, model, Trigger.ACCEPT_RATE, "monitor",
                  lambda session, cfg: accept_rate.check(session, model, cfg.accept_rate))


def _check(task: RetrainerTask, model: str, trigger: Trigger, requested_by: str,
           decide: Callable[[Any, ModelConfig], dict[str, Any]]) -> dict[str, Any]:
    """Run a check; when it says retrain_needed, open (or pull forward) the model's request and enqueue it."""
    settings = get_settings()
    job = None
    with task.session() as session:
        result = decide(session, settings.model(model))
        if result["status"] == "retrain_needed":
            job = retrain_requests.coalesce(session, settings, model, trigger=trigger, requested_by=requested_by,
                                            window=0)
    if job is not None:  # enqueue only after the request row committed
        send_jobs([job], trigger=trigger.value, settings=settings)
    result["retrain_enqueued"] = job is not None
    log.info("%s %s: %s", requested_by, model, result["message"])
    return result


@app.task(name="checks.request_retrain", base=RetrainerTask, bind=True, soft_time_limit=60, time_limit=90)
def request_retrain(self: RetrainerTask, model: str, trigger: str = "schedule") -> bool:
    """A scheduled retrain: open (or pull forward) the model's request, then enqueue it."""
    settings = get_settings()
    with self.session() as session:
        job = retrain_requests.coalesce(session, settings, model, trigger=Trigger(trigger), requested_by="beat",
                                        window=0)
    if job is not None:
        send_jobs([job], settings=settings)
    return job is not None


@app.task(name="checks.reconcile", base=RetrainerTask, bind=True, ignore_result=True, soft_time_limit=60,
          time_limit=90)
def reconcile_state(self: RetrainerTask) -> None:
    with self.session() as session:
        repairs = reconcile.reconcile(session, get_settings())
    send_jobs(repairs.jobs)  # after the commit that re-opened them
    for run_id in repairs.renotified_runs:
        app.send_task("notifications.notify_decision", args=[run_id], queue="notifications")
        with self.session() as session:
            reconcile.mark_notified(session, [run_id])
    resent = _resend_events(self)
    if repairs or resent:
        log.info("reconciled: %s", {k: v for k, v in repairs.as_dict().items() if v} | {"resent_events": resent})


@app.task(name="checks.compact_observations", base=RetrainerTask, bind=True, ignore_result=True,
          soft_time_limit=600, time_limit=900)
def compact_observations(self: RetrainerTask) -> int:
    """Each model's training rows into columnar blocks (services/blocks.py), off every retrain's path: a
    retrain reads the blocks and only the rows since. PostgreSQL only; the embedded SQLite keeps the row path."""
    written = 0
    for model in get_settings().models:
        with self.session() as session:
            if session.get_bind().dialect.name != "postgresql":
                return 0
            written += (n := blocks.compact(session, model))
        if n:
            log.info("compacted %s: %d block(s) written", model, n)
    return written


def _resend_events(task: RetrainerTask) -> int:
    """Per-event messages a Redis restart lost (tasks/inbox.py): sent again, and the pass says so."""
    box = inbox.of(app)
    if box is None:
        return 0
    try:
        resent = box.resend_overdue(app, get_settings().recovery.resend_after_seconds)
    except (redis.RedisError, BrokerError) as exc:  # the broker is away: the next pass tries again
        log.warning("reconcile: event receipts not checked (%s)", type(exc).__name__)
        return 0
    if resent:
        with task.session() as session:
            reconcile.record(session, resent_events=resent)
    return resent
