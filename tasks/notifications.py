"""notifications.* — publish decisions. The decision is committed before this runs, so a Slack
outage delays the message but never loses the decision."""

from __future__ import annotations

import logging
from typing import Any

from retrainer.config import get_settings
from retrainer.db import TRANSIENT_ERRORS
from retrainer.db.records import SystemEvent, TrainingRun
from retrainer.services import notifications
from retrainer.tasks.app import app
from retrainer.tasks.base import RetrainerTask

log = logging.getLogger(__name__)

# Slack down or rate-limiting: retried with backoff for about an hour, then recorded as failed.
DELIVERY: dict[str, Any] = {
    "autoretry_for": (notifications.SlackTransientError, *TRANSIENT_ERRORS), "retry_backoff": 5,
    "retry_backoff_max": 600, "retry_jitter": True, "max_retries": 8, "soft_time_limit": 60, "time_limit": 90,
}


class NotifyTask(RetrainerTask):
    abstract = True

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Retries spent, or Slack refused it: the decision stays in the database, and the lost message is
        recorded (system_events, `retrainer status`) instead of only a worker log line."""
        about = (args or [*kwargs.values()])[0]
        why = f"{type(exc).__name__}: {exc}"
        try:
            self._record(about, why)
        except TRANSIENT_ERRORS as db_exc:  # the database is what failed: the worker log is all there is
            log.error("%s %s not delivered (%s) and not recorded (%s)", self.name, about, why, type(db_exc).__name__)

    def _record(self, about: Any, why: str) -> None:
        with self.session() as session:
            if self.name == notify_alert.name:
                event = session.get(SystemEvent, int(about))
                notifications.record_failure(session, f"alert {about}", event.model if event else None, why,
                                             self.request.retries, alert_event_id=int(about))
            else:
                run = session.get(TrainingRun, str(about))
                notifications.record_failure(session, f"decision for {about}", run.model if run else None, why,
                                             self.request.retries, run_id=str(about))


@app.task(
    name="notifications.notify_decision", base=NotifyTask, bind=True, ignore_result=True,
    **DELIVERY,
)
def notify_decision(self: RetrainerTask, run_id: str) -> str:
    settings = get_settings()
    with self.session() as session:
        return notifications.notify_decision(session, run_id, settings.slack_webhook_url, settings.slack_timeout_seconds)


@app.task(
    name="notifications.notify_alert", base=NotifyTask, bind=True, ignore_result=True,
    **DELIVERY,
)
def notify_alert(self: RetrainerTask, event_id: int) -> str:
    settings = get_settings()
    with self.session() as session:
        return notifications.notify_alert(session, event_id, settings.slack_webhook_url, settings.slack_timeout_seconds)
