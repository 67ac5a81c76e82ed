"""events.* — the per-event path: one Celery message per event, stored in batches.

Producers send one message per event (`send_event`, or `delay()`); a worker buffers them (celery-batches)
and stores up to FLUSH_EVERY in ONE transaction through the batch path's own store
(services/events.py `ingest`: one INSERT, coalesced per model, each refused event kept as an
`event_rejected` row), then acknowledges the batch's messages in one round trip. A message is
acknowledged only once its event's row (stored or rejected) committed; a lone event waits at most
FLUSH_INTERVAL for company. Re-delivery is harmless: the event id is unique.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Collection
from functools import partial
from typing import Any

import redis
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task
from kombu.exceptions import OperationalError as BrokerError

from retrainer.config import get_settings
from retrainer.db import TRANSIENT_ERRORS, session_scope
from retrainer.services import events, validation
from retrainer.services.errors import InvalidEvent
from retrainer.tasks import inbox
from retrainer.tasks.app import app
from retrainer.tasks.enqueue import send_jobs

log = logging.getLogger(__name__)

FLUSH_EVERY = 500  # events per transaction (the events worker's window holds two batches: tasks/app.py)
FLUSH_INTERVAL = 0.2  # s: the longest a lone event waits for company
# A batch whose database is away retries in place (backoff with jitter) for this long, holding its
# messages unacknowledged, then hands them back to the queue: no event is dropped by an outage.
RETRY_SECONDS = 120

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


class EventBatches(Batches):
    """celery-batches' buffer, with the acknowledgement this path needs.

    celery-batches acknowledges an acks_late batch when its pool job returns, even when the task
    raised, and not at all when the pool child died (each lost batch would then hold its window share
    until the worker restarts). Here: the task returns what it committed; the rest goes back to the
    queue. A batch lost with its child (killed, out of memory, past its hard time limit) is handed back
    once; a message that was already handed back is acknowledged instead, so an event that kills
    every child it meets cannot loop (on Redis its receipt still brings it back, tasks/inbox.py)."""

    abstract = True

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:
        buffer = super().Strategy(task, app, consumer)

        def on_message(message: Any, *args: Any, **kwargs: Any) -> None:
            buffer(message, *args, **kwargs)
            # A full window brings nothing more until something is acknowledged: store what is here
            # now instead of waiting for the timer (a worker that also consumes training has a window of 1-2).
            qos = getattr(message.channel, "qos", None)
            if qos is not None and not qos.can_consume() and not self._buffer.empty():
                self._do_flush()

        return on_message

    def flush(self, requests: Collection[Request]) -> Any:
        requests = list(requests)
        batch = ([SimpleRequest.from_request(r) for r in requests],)
        return self._pool.apply_async(
            apply_batches_task, (self, batch, 0, None),
            callback=partial(_settle, requests), error_callback=partial(_hand_back, requests),
            soft_timeout=self.soft_time_limit, timeout=self.time_limit,
        )


def _settle(requests: list[Request], result: Any) -> None:
    """In the worker's main process, once the batch task returned: ack what it committed, requeue the rest."""
    if not isinstance(result, dict):  # it raised (celery-batches logged it), or ran out of its soft time limit
        _hand_back(requests, "the batch task raised")
        return
    again = set(result.get("requeue", ()))
    _acknowledge([r for r in requests if r.id not in again])
    for request in requests:
        if request.id in again:
            request.reject(requeue=True)


def _hand_back(requests: list[Request], why: Any) -> None:
    """The batch did not report back (`why`: from billiard when its child died or ran out of time). Whatever
    it may have committed before that stores nothing twice when re-delivered."""
    why = getattr(why, "exception", why)  # billiard: ExceptionInfo(ExceptionWithTraceback(WorkerLostError(...)))
    why = getattr(why, "exc", why)
    fresh = [r for r in requests if not r.delivery_info.get("redelivered")]
    log.error("events batch of %d not stored (%r): %d handed back to the queue, %d acknowledged (re-delivered "
              "already)", len(requests), why, len(fresh), len(requests) - len(fresh))
    for request in fresh:
        request.reject(requeue=True)
    _acknowledge([r for r in requests if r.delivery_info.get("redelivered")])


def _acknowledge(requests: list[Request]) -> None:
    """One round trip per channel where the transport can (tasks/broker.py), else one per message."""
    by_channel: dict[Any, list[Request]] = {}
    for request in requests:
        by_channel.setdefault(request.message.channel, []).append(request)
    for channel, group in by_channel.items():
        forget_many = getattr(getattr(channel, "qos", None), "forget_many", None)
        if forget_many is not None:
            try:
                forget_many([r.message.delivery_tag for r in group])
            except Exception as exc:  # noqa: BLE001  (each ack below tries again, and logs its own error)
                log.warning("events batch: bulk acknowledgement failed (%s)", type(exc).__name__)
        for request in group:
            request.acknowledge()


@app.task(
    name="events.ingest_event", base=EventBatches, bind=True, ignore_result=True,
    acks_late=True,  # idempotent: the event id is unique, a re-delivery stores nothing twice
    flush_every=FLUSH_EVERY, flush_interval=FLUSH_INTERVAL,
    soft_time_limit=RETRY_SECONDS + 30, time_limit=RETRY_SECONDS + 60, Request=EventRequest,
)
def ingest_event(self: EventBatches, requests: list[SimpleRequest]) -> dict[str, Any]:
    """One batch of per-event messages, each one event: its JSON text (send_event), a dict from an older
    producer, or what EventRequest made of anything else. Returns the task ids to requeue (none unless
    the database stayed away) and the counts."""
    payloads: list[Any] = []
    known: dict[int, str] = {}  # refused before parsing: index -> reason
    for i, request in enumerate(requests):
        document = as_document(request.args, request.kwargs)
        if document.startswith(UNREADABLE):
            known[i], _, preview = document.removeprefix(UNREADABLE).partition("\x00")
            payloads.append(preview)
        else:
            payloads.append(document)
    settings = get_settings()
    ingested = _ingest_riding_out_outages(settings, payloads, known)
    if ingested is None:
        return {"requeue": [r.id for r in requests]}
    for reason in ingested.rejected.values():
        log.warning("event rejected: %s", validation.storable(reason))
    try:
        send_jobs(ingested.stored.enqueue, settings=settings)
    except (BrokerError, redis.RedisError) as exc:  # committed: the reconciler re-sends a stale pending request
        log.warning("events batch: retrain not enqueued (%s)", type(exc).__name__)
    _forget(payloads)
    stored = ingested.stored
    log.info("events batch: %d messages, %d stored, %d duplicates, %d rejected, %d retrains enqueued",
             len(requests), stored.stored, stored.duplicates, len(ingested.rejected), len(stored.enqueue))
    return {"requeue": [], "stored": stored.stored, "duplicates": stored.duplicates,
            "rejected": len(ingested.rejected)}


def _ingest_riding_out_outages(settings: Any, payloads: list[Any], known: dict[int, str]) -> events.Ingested | None:
    """The batch in one transaction, retried with backoff (equal jitter, at most 10 s apart) through a
    database outage for up to RETRY_SECONDS; None when the database is still away."""
    deadline, attempt = time.monotonic() + RETRY_SECONDS, 0
    while True:
        try:
            with session_scope(settings.database_url) as session:
                return events.ingest(session, settings, payloads, known)
        except TRANSIENT_ERRORS as exc:
            step = min(10.0, 0.5 * 2 ** attempt)
            delay = step / 2 + random.uniform(0, step / 2)
            if time.monotonic() + delay > deadline:
                log.error("events batch of %d: database still unavailable after %d s (%s); back to the queue",
                          len(payloads), RETRY_SECONDS, type(exc).__name__)
                return None
            log.warning("events batch of %d: database unavailable (%s); retrying in %.1f s", len(payloads),
                        type(exc).__name__, delay)
            time.sleep(delay)
            attempt += 1


def _forget(payloads: list[Any]) -> None:
    """Stored or rejected: the receipts of send_event can go (tasks/inbox.py), in one round trip. A rejected
    event's too, or it would be re-sent and rejected again every period."""
    box = inbox.of(app)
    event_ids = {i for i in map(_sent_id, payloads) if i is not None}
    if box is None or not event_ids:
        return
    try:
        box.forget_many(event_ids)
    except redis.RedisError as exc:  # kept: the reconciler re-sends them once, and they store nothing twice
        log.info("events batch: %d receipts not cleared (%s)", len(event_ids), type(exc).__name__)


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
