"""events.* — the per-event path: store one producer event, then coalesce it."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from celery.worker.request import Request

from retrainer.config import UnknownModel, get_settings
from retrainer.services import events, validation
from retrainer.services.errors import InvalidEvent
from retrainer.tasks import inbox
from retrainer.tasks.app import app
from retrainer.tasks.base import RetrainerTask
from retrainer.tasks.enqueue import send_jobs

log = logging.getLogger(__name__)

# Starts the argument that stands for an event the worker could not turn into a JSON document:
# UNREADABLE + reason + NUL + preview. Valid JSON text never holds a raw NUL, so no event can look like it.
UNREADABLE = "\x00unreadable event\x00"


class EventRequest(Request):
    """Runs in the worker's main process, before the message goes to a pool child: the event
    argument becomes one JSON string (send_event already sends one). billiard pickles the arguments
    to hand them to the child, and a deeply nested object raised RecursionError there, which killed
    the worker, again on every redelivery."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        call_args, call_kwargs, embed = self._payload
        if _one_event(call_args, call_kwargs) and isinstance(call_args[0], str):
            return  # the usual case: nothing to change
        new_args: list[str] = [as_document(call_args, call_kwargs)]
        new_kwargs: dict[str, Any] = {}
        self._request_dict["args"] = self._args = new_args
        self._request_dict["kwargs"] = self._kwargs = new_kwargs
        # The pool child reads the arguments from the body: hand it the decoded body (content type
        # None), so it neither decodes the original again nor meets the nested object.
        body = (new_args, new_kwargs, embed)
        self._body, self._decoded, self._content_type, self._content_encoding = body, True, None, None
        self._Request__payload = self.__dict__["_payload"] = body  # the attribute and its cached property


def _one_event(call_args: Any, call_kwargs: Any) -> bool:
    return isinstance(call_args, (list, tuple)) and len(call_args) == 1 and call_kwargs == {}


def as_document(call_args: Any, call_kwargs: Any) -> str:
    """The event of a message's arguments as JSON text, or UNREADABLE with the reason."""
    if _one_event(call_args, call_kwargs):
        payload = call_args[0]
    elif call_args in ([], ()) and isinstance(call_kwargs, dict) and list(call_kwargs) == ["payload"]:
        payload = call_kwargs["payload"]
    else:
        return unreadable("event: the message's arguments are not one event (one argument or payload=)",
                          [call_args, call_kwargs])
    if isinstance(payload, str):
        return payload
    try:
        # Depth and size first, iteratively: json.dumps cannot then recurse deeply. kombu's JSON
        # hands back bytes, datetimes, decimals and UUIDs too; str() writes the last three.
        return json.dumps(validation.decode(payload), separators=(",", ":"), ensure_ascii=False, default=str)
    except InvalidEvent as exc:
        return unreadable(str(exc), payload)
    except ValueError:  # an integer of more than 4,300 digits: parse names the field
        try:
            events.parse(payload)
            reason = "event: cannot be written as JSON"
        except InvalidEvent as exc:
            reason = str(exc)
        return unreadable(reason, payload)


def unreadable(reason: str, payload: Any) -> str:
    return f"{UNREADABLE}{validation.storable(reason)}\x00{validation.preview(payload)}"


@app.task(
    name="events.ingest_event", base=RetrainerTask, bind=True, ignore_result=True,
    acks_late=True,  # idempotent: the event id is unique, a re-delivery stores nothing twice
    soft_time_limit=30, time_limit=60, Request=EventRequest,
)
def ingest_event(self: RetrainerTask, payload: Any) -> None:
    """`payload` is the event's JSON text (send_event), or a dict from an older producer."""
    settings = get_settings()
    stored = None
    if isinstance(payload, str) and payload.startswith(UNREADABLE):
        problem, _, payload = payload.removeprefix(UNREADABLE).partition("\x00")
    else:
        try:
            event = events.parse(payload)
            with self.session() as session:
                stored = events.store(session, settings, [event])
            problem = stored.rejected[0][1] if stored.rejected else None
        except (InvalidEvent, UnknownModel) as exc:  # bad input: kept with the reason, never retried
            problem = str(exc)
    if problem is not None:
        with self.session() as session:
            events.reject(session, payload, problem)
        log.warning("event rejected: %s", validation.storable(problem))
    else:
        send_jobs(stored.enqueue if stored else [], settings=settings)
    _forget(payload)


def _forget(payload: Any) -> None:
    """Stored or rejected: the receipt of send_event can go (tasks/inbox.py). A rejected event's too,
    or it would be re-sent and rejected again every period."""
    box = inbox.of(app)
    event_id = _sent_id(payload)
    if box is None or event_id is None:
        return
    try:
        box.forget(event_id)
    except redis.RedisError as exc:  # kept: the reconciler re-sends it once, and it stores nothing twice
        log.info("event %s: receipt not cleared (%s)", event_id, type(exc).__name__)


def _sent_id(payload: Any) -> str | None:
    """The event id in a document send_event wrote (JSON text with one); None for anything else."""
    if not isinstance(payload, str) or payload.startswith(UNREADABLE):
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    try:  # send_event records only ids that pass validation: no other can have a receipt
        return validation.text(doc.get("event_id"), "event_id", validation.MAX_ID_CHARS)
    except InvalidEvent:
        return None
