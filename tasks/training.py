"""training.* — the long-running work, on its own queue and workers."""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.orm import Session

from retrainer.config import UnknownModel, get_settings
from retrainer.db import TRANSIENT_ERRORS
from retrainer.db.records import RequestStatus, RetrainRequest
from retrainer.services import audit, reconcile, retrain, retrain_requests, run_failures, run_logs
from retrainer.tasks.app import app, longest_hard_limit
from retrainer.tasks.base import RetrainerTask
from retrainer.tasks.enqueue import RetrainFailed, send_jobs

log = logging.getLogger(__name__)
_limit = longest_hard_limit(get_settings())


@app.task(
    name="training.retrain_model", base=RetrainerTask, bind=True,
    acks_late=True,  # idempotent: a duplicate message finds its request taken or done and exits "skipped"
    soft_time_limit=_limit - 60, time_limit=_limit,
)
def retrain_model(self: RetrainerTask, model: str, trigger: str = "manual", request_id: int | None = None) -> dict[str, Any]:
    """The result of a retrain; one that ended in error raises RetrainFailed (Celery state FAILURE)."""
    settings = get_settings()
    if model not in settings.models:  # sent by a producer whose configuration this worker does not share
        reason = str(UnknownModel(model, list(settings.models)))
        with self.session() as session:
            _fail_request(session, model, request_id, reason)
        raise RetrainFailed.of({"status": "error", "model": model, "trigger": trigger, "request_id": request_id,
                                "message": reason})
    result: dict[str, Any] | None = None
    with run_logs.capture(run_logs.secret_values(settings)) as captured:
        try:
            with self.session() as session:
                try:
                    result = retrain.retrain(session, settings, model, trigger, request_id, self.request.id,
                                             attempt=self.request.retries)
                except SoftTimeLimitExceeded:  # the pipeline already recorded the failure; keep the worker
                    result = {"status": "error", "model": model, "message": "time limit exceeded"}
            log.info("retrain %s: %s %s", model, result["status"], result.get("reason") or result.get("message", ""))
        finally:  # a transient error (the task retries) keeps its attempt's lines too
            _keep_logs(self, result, captured.text())
    if result["status"] == "error":
        _alert_on_repeated_failures(self, model)
    if result["status"] != "skipped":
        _after_run(self, model, result.get("run_id"))
    if result["status"] == "error":  # after the clean-up above: the run row and the request say why
        raise RetrainFailed.of(result)
    return result


def _fail_request(session: Session, model: str, request_id: int | None, reason: str) -> None:
    """Close the message's request with the reason, so it does not stay pending (and be re-sent) for
    ever; only while pending, since a worker that knows the model may have taken it meanwhile."""
    request = session.get(RetrainRequest, request_id, with_for_update=True) if request_id is not None else None
    if request is not None and request.model == model and request.status == RequestStatus.PENDING:
        retrain_requests.close(session, request_id, RequestStatus.FAILED, reason)
        audit.record(session, "decision", f"{model}: retrain request {request_id} failed: {reason}", model=model,
                     request_id=request_id, outcome="error")


def _keep_logs(task: RetrainerTask, result: dict[str, Any] | None, text: str) -> None:
    """The run's log lines on its row; never fails the task (the database may be why it ended)."""
    try:
        with task.session() as session:
            run_id = (result or {}).get("run_id") or run_logs.run_of_task(session, task.request.id, task.request.retries)
            if run_id is not None:
                run_logs.store(session, run_id, text)
    except Exception as exc:  # noqa: BLE001  called in a finally: must not hide the error the run ended with
        log.warning("could not store the logs of %s: %s", (result or {}).get("run_id"), type(exc).__name__)


def _alert_on_repeated_failures(task: RetrainerTask, model: str) -> None:
    """After a failed run: the model's third failure in a week raises an alert (once a day), sent after commit."""
    try:
        with task.session() as session:
            alert = run_failures.alert_if_repeated(session, model)
            alert_id = alert.id if alert is not None else None
        if alert_id is not None:
            app.send_task("notifications.notify_alert", args=[alert_id], queue="notifications")
    except (BrokerError, *TRANSIENT_ERRORS) as exc:  # the alert row, if committed, still shows in `status`
        log.warning("repeated-failure alert for %s: %s", model, type(exc).__name__)


def _after_run(task: RetrainerTask, model: str, run_id: str | None) -> None:
    """Publish the decision and start the follow-up that waited for this run. Both are also done by
    the reconciler if this worker dies or the broker is away right now, so a failure here is logged."""
    try:
        if run_id is not None:
            app.send_task("notifications.notify_decision", args=[run_id], queue="notifications")
            with task.session() as session:
                reconcile.mark_notified(session, [run_id])
        with task.session() as session:
            job = retrain_requests.next_job(session, model)
        if job is not None:
            send_jobs([job])
    except (BrokerError, *TRANSIENT_ERRORS) as exc:
        log.warning("after run %s: %s; the reconciler will send what is missing", run_id, type(exc).__name__)
