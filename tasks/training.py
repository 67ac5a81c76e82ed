"""training.* — the long-running work, on its own queue and workers."""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from retrainer.config import get_settings
from services import retrain
from tasks.app import app, longest_hard_limit
from tasks.base import RetrainerTask

log = logging.getLogger(__name__)
_limit = longest_hard_limit(get_settings())


@app.task(
    name="training.retrain_model", base=RetrainerTask, bind=True,
    acks_late=True,  # idempotent: the run lock makes a re-delivered duplicate exit "skipped"
    soft_time_limit=_limit - 60, time_limit=_limit, max_retries=20,  # a follow-up may wait for a long run
)
def retrain_model(self: RetrainerTask, model: str, trigger: str = "manual", request_id: int | None = None) -> dict[str, Any]:
    with self.session() as session:
        try:
            result = retrain.retrain(session, get_settings(), model, trigger, request_id, self.request.id)
        except SoftTimeLimitExceeded:  # the pipeline already recorded the failure; keep the worker
            result = {"status": "error", "model": model, "message": "time limit exceeded"}
    log.info("retrain %s: %s %s", model, result["status"], result.get("reason") or result.get("message", ""))
    if result["status"] == "skipped" and request_id is not None and result.get("holder"):
        # A follow-up that arrived while a run holds the lock waits for it instead of being lost.
        raise self.retry(countdown=max(5.0, get_settings().model(model).debounce_seconds))
    if result.get("run_id") and result["status"] != "skipped":
        app.send_task("notifications.notify_decision", args=[result["run_id"]], queue="notifications")
    return result
