"""checks.* — scheduled checks: does a model need a retrain, and does anything need repair."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from retrainer.config import Settings, get_settings
from retrainer.db import session_scope
from retrainer.db.records import Trigger
from retrainer.services import blocks, reconcile, retrain_requests, triggers
from retrainer.services.controls import Suppressed
from retrainer.tasks import inbox
from retrainer.tasks.app import app
from retrainer.tasks.base import RetrainerTask
from retrainer.tasks.enqueue import send_jobs

log = logging.getLogger(__name__)


# The beat task of each check of services/triggers.py, by the check's name (`retrainer check --trigger NAME`).
TASKS = {"accuracy": "checks.check_accuracy", "accept_rate": "checks.monitor", "errors": "checks.check_errors",
         "new_data": "checks.check_new_data", "drift": "checks.check_drift", "probation": "checks.check_probation"}


def _check_task(check: str, doc: str, limit: int = 120) -> Any:
    """The thin task of one check; its name is TASKS[check], and it asks in that name's last part."""
    requested_by = TASKS[check].split(".")[1]

    def run(self: RetrainerTask, model: str) -> dict[str, Any]:
        return _check(self, model, check, requested_by)

    run.__doc__ = doc
    return app.task(name=TASKS[check], base=RetrainerTask, bind=True, soft_time_limit=limit,
                    time_limit=limit + 60)(run)


check_accuracy = _check_task("accuracy", "Live accuracy of the production version against its threshold.")
monitor = _check_task("accept_rate", "The hourly monitor: the accept-rate check (services/accept_rate.py).")
check_new_data = _check_task("new_data", "Enough new labelled rows and time since the last run.")
check_errors = _check_task("errors", "High-confidence errors: a fine-tune from the production version.")
check_drift = _check_task("drift", "Recent inputs against the production version's reference profile.", 300)
check_probation = _check_task("probation", "A newly promoted version on its live outcomes: rolled back if worse.")


def _check(task: RetrainerTask, model: str, name: str, requested_by: str) -> dict[str, Any]:
    result = check_and_ask(model, name, requested_by, get_settings())
    log.info("%s %s: %s", requested_by, model, result["message"])
    return result


def check_and_ask(model: str, name: str, requested_by: str, settings: Settings,
                  via: Celery | None = None) -> dict[str, Any]:
    """Run a check; when it says retrain_needed, open (or pull forward) the model's request and enqueue it.
    Beat's check tasks and POST /api/ml/check-retrain (in the API's process, on its broker `via`)."""
    check = triggers.CHECKS[name]
    job = None
    with session_scope(settings.database_url) as session:
        result = check.decide(session, model, settings.model(model))
        if result["status"] == "retrain_needed" and check.trigger is not None:
            job = retrain_requests.for_check(session, settings, model, check.trigger, requested_by, result)
    if isinstance(job, Suppressed):  # recorded with its reason; the check's own result says so too
        result["suppressed"], job = job.reason, None
    if job is not None and check.trigger is not None:  # enqueue only after the request row committed
        send_jobs([job], trigger=check.trigger.value, settings=settings, via=via)
    if result.get("alert_event_id") is not None:
        (via or app).send_task("notifications.notify_alert", args=[result["alert_event_id"]], queue="notifications")
    result["retrain_enqueued"] = job is not None
    return result


@app.task(name="checks.request_retrain", base=RetrainerTask, bind=True, soft_time_limit=60, time_limit=90)
def request_retrain(self: RetrainerTask, model: str, trigger: str = "schedule") -> bool:
    """A scheduled retrain: open (or pull forward) the model's request, then enqueue it."""
    settings = get_settings()
    with self.session() as session:
        job = retrain_requests.coalesce(session, settings, model, trigger=Trigger(trigger), requested_by="beat",
                                        window=0)
    if isinstance(job, Suppressed):
        log.info("scheduled retrain of %s suppressed: %s", model, job.reason)
        return False
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
