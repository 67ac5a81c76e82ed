"""Promotion decisions as Slack Block Kit messages, posted through slack_sdk's WebhookClient.

With no webhook configured the message is logged instead. The webhook URL is a secret: it is never
logged, never put in an exception message and never stored; nor is a response body, which may echo it.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import SecretStr
from sqlalchemy.orm import Session

from retrainer.db.records import RetrainRequest, SystemEvent, TrainingRun, Trigger
from retrainer.services import audit
from retrainer.services.errors import NotFound

log = logging.getLogger(__name__)
logging.getLogger("slack_sdk").setLevel(logging.WARNING)  # its debug lines would print the URL

HEADLINES = {  # outcome -> (emoji, headline)
    "retrained": (":white_check_mark:", "{model}: {version} promoted to production"),
    "kept": (":pause_button:", "{model}: {version} trained, production kept"),
    "insufficient_data": (":warning:", "{model}: not enough data to retrain"),
    "no_new_data": (":fast_forward:", "{model}: too little new data to retrain on"),
    "error": (":x:", "{model}: retrain failed"),
    "data_check_failed": (":x:", "{model}: retrain failed its data checks"),
    "skipped": (":fast_forward:", "{model}: retrain skipped"),
}


class SlackTransientError(Exception):
    """Slack timed out, rate-limited us or answered 5xx: worth a retry."""


class SlackRejected(Exception):
    """Slack refused the message (4xx other than 429): retrying will not help."""


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("–" if value is None else str(value))


def decision_message(session: Session, run_id: str) -> tuple[str, list[dict[str, Any]]]:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"training run {run_id!r} not found")
    outcome = run.outcome or run.status.value
    emoji, template = HEADLINES.get(outcome, (":information_source:", "{model}: " + outcome))
    headline = template.format(model=run.model, version=run.version_id or "–")
    fields = [
        f"*Model*\n{run.model}", f"*Trigger*\n{trigger_text(session, run)}",
        f"*Candidate*\n{run.version_id or '–'}", f"*Run*\n{run.run_id}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if run.metrics:
        keys = list(run.metrics)  # the family's own metrics, in its order
        old = run.old_metrics or {}
        lines = [f"`{k:<8}` {_fmt(old.get(k))} → {_fmt(run.metrics[k])}" for k in keys]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Holdout metrics (production → candidate)*\n" + "\n".join(lines)}})
    if run.decision and run.decision.get("rules"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": "*Decision rules*\n" + rules_text(run.decision)[:2800]}})
    reason = run.promotion_reason or run.error_message
    if reason:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": reason[:2000]}]})
    return f"{emoji} {headline}", blocks


def rules_text(decision: dict[str, Any]) -> str:
    """One line per rule of a decision record: verdict, rule, value against threshold, note."""
    mark = {True: "pass", False: "FAIL", None: "n/a"}
    lines = []
    for rule in decision.get("rules", []):
        value, threshold = rule.get("value"), rule.get("threshold")
        figures = f"{_fmt(value)} (threshold {_fmt(threshold)})" if threshold is not None else _fmt(value)
        note = f" - {rule['note']}" if rule.get("note") else ""
        lines.append(f"{mark.get(rule.get('passed'), '?'):<4} {rule.get('rule')}: {figures}{note}")
    return "\n".join(lines)


def alert_message(session: Session, event_id: int) -> tuple[str, list[dict[str, Any]]]:
    """An alert recorded in system_events (kind `alert`) as a Slack message."""
    event = session.get(SystemEvent, event_id)
    if event is None or event.kind != "alert":
        raise NotFound(f"alert {event_id} not found")
    if event.payload.get("action") == "auto_rollback":
        return rollback_message(event)
    text = f":rotating_light: {event.message}"
    return text, [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}]


def rollback_message(event: SystemEvent) -> tuple[str, list[dict[str, Any]]]:
    """A probation's automatic rollback (services/probation.py): what went back, and the evidence."""
    p, v = event.payload, event.payload.get("verdict") or {}
    headline = f"{event.model}: {p.get('version_id')} rolled back to {p.get('restored')} automatically"
    fields = [f"*Model*\n{event.model}", f"*Rolled back*\n{p.get('version_id')}",
              f"*Production again*\n{p.get('restored')}", f"*By*\n{p.get('actor', 'probation')}",
              f"*Mean loss, new (outcomes)*\n{_fmt(v.get('mean_new'))} ({v.get('n_new')})",
              f"*Mean loss, before (outcomes)*\n{_fmt(v.get('mean_prev'))} ({v.get('n_prev')})"]
    return f":rewind: {headline}", [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": str(v.get("reason") or event.message)[:2000]}]},
    ]


def notify_alert(session: Session, event_id: int, webhook_url: SecretStr | None, timeout: float) -> str:
    text, blocks = alert_message(session, event_id)
    session.commit()  # as notify_decision: no transaction open during the HTTP call
    how = send(webhook_url, text, blocks, timeout)
    event = session.get(SystemEvent, event_id)
    audit.record(session, "notification", f"alert {event_id} {how}: {text}", model=event.model if event else None,
                 alert_event_id=event_id, channel="slack", delivery=how)
    return how


def trigger_text(session: Session, run: TrainingRun) -> str:
    """Why the run ran: its trigger, who asked and why, the drift report, whether it fine-tuned, the
    moment its rows start from (services/since_change.py)."""
    text = run.trigger.value + (" (fine-tune)" if run.fine_tune else "")
    request = session.get(RetrainRequest, run.request_id) if run.request_id else None
    if request is not None and run.trigger == Trigger.MANUAL and request.requested_by != Trigger.MANUAL.value:
        text += f" by {request.requested_by}" + (f": {request.reason[:200]}" if request.reason else "")
    if run.drift_report_id is not None:
        text += f" (drift report {run.drift_report_id})"
    if run.train_since is not None:
        text += f", trained on the rows since it got worse at {run.train_since:%Y-%m-%d %H:%M} UTC"
    return text


def send(webhook_url: SecretStr | None, text: str, blocks: list[dict[str, Any]], timeout: float) -> str:
    """Post or log the message; returns 'sent' or 'logged'."""
    if webhook_url is None:
        log.info("slack (no webhook configured): %s", text)
        return "logged"
    from slack_sdk.webhook import WebhookClient

    client = WebhookClient(webhook_url.get_secret_value(), timeout=int(max(1, timeout)))
    try:
        response = client.send(text=text, blocks=blocks)
    except Exception as exc:  # noqa: BLE001  network errors and timeouts; the message must not carry the URL
        raise SlackTransientError(f"Slack webhook unreachable: {type(exc).__name__}") from None
    # The status code only: a relay or an endpoint may echo the request URL (the secret) in its body.
    if response.status_code == 429 or response.status_code >= 500:
        raise SlackTransientError(f"Slack webhook answered {response.status_code}")
    if response.status_code >= 400:
        raise SlackRejected(f"Slack webhook refused the message: {response.status_code}")
    return "sent"


def notify_decision(session: Session, run_id: str, webhook_url: SecretStr | None, timeout: float) -> str:
    text, blocks = decision_message(session, run_id)
    # End the read before the HTTP call: no transaction stays open while Slack is slow (on SQLite,
    # whose transactions begin IMMEDIATE, it would hold the database's write lock for every process).
    session.commit()
    how = send(webhook_url, text, blocks, timeout)
    run = session.get(TrainingRun, run_id)
    audit.record(session, "notification", f"decision for {run_id} {how}: {text}", model=run.model if run else None,
                 run_id=run_id, channel="slack", delivery=how)
    return how


def record_failure(session: Session, what: str, model: str | None, why: str, retries: int, **ids: Any) -> None:
    """A message that could not be delivered: recorded, so `status` shows it. `why` names the exception
    and Slack's status code only (the messages above never hold the webhook URL)."""
    audit.record(session, "notification_failed", f"{what} not delivered after {retries} retries: {why[:300]}",
                 model=model, channel="slack", retries=retries, **ids)
