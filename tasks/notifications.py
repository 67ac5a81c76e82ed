"""notifications.* — publish decisions. The decision is committed before this runs, so a Slack
outage delays the message but never loses the decision."""

from __future__ import annotations

from retrainer.config import get_settings
from retrainer.db import TRANSIENT_ERRORS
from retrainer.services import notifications
from retrainer.tasks.app import app
from retrainer.tasks.base import RetrainerTask


@app.task(
    name="notifications.notify_decision", base=RetrainerTask, bind=True, ignore_result=True,
    autoretry_for=(notifications.SlackTransientError, *TRANSIENT_ERRORS), retry_backoff=5, retry_backoff_max=600,
    retry_jitter=True, max_retries=8, soft_time_limit=60, time_limit=90,
)
def notify_decision(self: RetrainerTask, run_id: str) -> str:
    settings = get_settings()
    with self.session() as session:
        return notifications.notify_decision(session, run_id, settings.slack_webhook_url, settings.slack_timeout_seconds)
