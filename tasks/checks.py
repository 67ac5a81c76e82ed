"""checks.* — scheduled health checks that decide whether a model needs a retrain."""

from __future__ import annotations

import logging
from typing import Any

from retrainer.config import get_settings
from retrainer.db.records import Trigger
from services import accuracy, events
from tasks.app import app
from tasks.base import RetrainerTask
from tasks.producer import send_jobs

log = logging.getLogger(__name__)


@app.task(name="checks.check_accuracy", base=RetrainerTask, bind=True, soft_time_limit=120, time_limit=180)
def check_accuracy(self: RetrainerTask, model: str) -> dict[str, Any]:
    settings = get_settings()
    job = None
    with self.session() as session:
        result = accuracy.check(session, model, settings.model(model).accuracy)
        if result["status"] == "retrain_needed":
            job = events.coalesce(session, settings, model, trigger=Trigger.ACCURACY,
                                  requested_by="check_accuracy", window=0)
    if job is not None:  # enqueue only after the request row committed
        send_jobs([job], trigger=Trigger.ACCURACY.value, settings=settings)
    result["retrain_enqueued"] = job is not None
    log.info("accuracy check %s: %s", model, result["message"])
    return result
