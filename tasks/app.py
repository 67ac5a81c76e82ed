"""The Celery app, configured from retrainer's settings: JSON only, one queue per domain.

Docs: https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup
from kombu import Exchange, Queue

from retrainer.config import Settings, get_settings
from retrainer.tasks.logcontext import LOG_FORMAT

QUEUES = ("training", "events", "checks", "notifications")


def longest_hard_limit(settings: Settings) -> int:
    return max(m.training.time_limit_seconds for m in settings.models.values()) + 60 if settings.models else 1860


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_url.startswith("filesystem"):
        # The embedded broker: a folder of message files shared by every process on this machine.
        root = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(root / "queue"), "data_folder_out": str(root / "queue"),
            "processed_folder": str(root / "processed"), "control_folder": str(root / "control"),
            "store_processed": False,
            "polling_interval": 0.1,  # the default 1 s poll makes a burst of messages crawl
        }
    # Redis re-delivers an unacked message after visibility_timeout: it must exceed the longest
    # hard time limit or a long retrain (acks_late) would run twice.
    options: dict[str, Any] = {"visibility_timeout": max(3600, 2 * longest_hard_limit(settings))}
    if settings.broker_url.startswith("redis"):
        options["global_keyprefix"] = f"{settings.redis_key_prefix}:"
    return options


# Messages an events worker may hold unacknowledged: two batches (tasks/events.py FLUSH_EVERY), one being
# stored while the next fills. A batch needs a window at least its size, or it waits for its timer.
EVENTS_WINDOW = 1000


def prefetch_multiplier(settings: Settings) -> int:
    """1 on a server broker: a long retrain must not hold queued messages hostage. The embedded broker
    runs celery 5.6's synchronous loop, which acknowledges a message only when its next 2 s poll ends
    (celery#10263, fixed in 5.7); with a window of one message per child each event then waited for
    that poll. One machine, one worker: a wider window costs nothing there."""
    return 16 if settings.broker_url.startswith("filesystem") else 1


def events_prefetch_multiplier(queues: Iterable[str], concurrency: int) -> int | None:
    """The multiplier of a worker that consumes the events queue and not the training queue: a window of
    EVENTS_WINDOW messages whatever its concurrency. None for any other worker (training keeps 1)."""
    consumed = set(queues)
    if "events" not in consumed or "training" in consumed:
        return None
    return math.ceil(EVENTS_WINDOW / max(concurrency, 1))


@celeryd_after_setup.connect
def _events_window(instance: Any, conf: Any, **_: Any) -> None:
    """A starting worker's -Q and -c are known here and its consumer is built but not started: widen an
    events worker's window. An explicit `--prefetch-multiplier` (other than the configured one) wins."""
    processes = max(getattr(instance, "max_concurrency", None) or instance.concurrency, 1)  # --autoscale: its max
    multiplier = events_prefetch_multiplier(instance.app.amqp.queues.consume_from, processes)
    consumer = getattr(instance, "consumer", None)
    if multiplier is None or consumer is None or instance.prefetch_multiplier != conf.worker_prefetch_multiplier:
        return
    multiplier = max(multiplier, instance.prefetch_multiplier)
    # What celery.worker.components.Consumer.create derived from the multiplier; the consumer also
    # re-derives its window from `prefetch_multiplier` after a reconnect and when the pool resizes.
    instance.prefetch_multiplier = consumer.prefetch_multiplier = multiplier
    consumer.initial_prefetch_count = processes * multiplier


def configure(app: Celery, settings: Settings) -> None:
    from retrainer.tasks.schedule import beat_conf, beat_schedule

    if settings.result_backend.startswith("db+sqlite"):
        Path(settings.result_backend.removeprefix("db+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    app.conf.update(
        broker_url=settings.broker_url,
        # kombu's Redis transport, moving messages in bulk (tasks/broker.py)
        broker_transport="retrainer.tasks.broker:Transport" if settings.broker_url.startswith("redis://") else None,
        result_backend=settings.result_backend,
        broker_transport_options=broker_options(settings),
        result_backend_transport_options={"global_keyprefix": f"{settings.redis_key_prefix}:"}
        if settings.result_backend.startswith("redis") else {},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_expires=7 * 24 * 3600,
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_default_queue="checks",
        task_routes={f"{q}.*": {"queue": q} for q in QUEUES},
        task_acks_on_failure_or_timeout=True,
        task_reject_on_worker_lost=False,  # a killed retrain is re-run by its lease expiry, not a loop
        worker_prefetch_multiplier=prefetch_multiplier(settings),
        worker_send_task_events=True,  # Flower
        task_send_sent_event=True,
        task_track_started=True,
        timezone="UTC",
        enable_utc=True,
        beat_schedule=beat_schedule(settings),
        **beat_conf(settings),  # Redis: any number of beats, one schedules (tasks/beat_lock.py); else the file
        beat_schedule_filename=str(settings.var_dir / "celerybeat-schedule"),
        worker_hijack_root_logger=True,
        worker_log_format=LOG_FORMAT,  # task lines carry "[model task-id]" (tasks/logcontext.py)
    )


TASK_MODULES = [f"retrainer.tasks.{name}" for name in ("training", "checks", "events", "notifications")]


def make_app(settings: Settings, main: str = "retrainer") -> Celery:
    """An app for these settings. Workers use the module's `app`; a test or a producer that talks to
    another broker makes its own (it only sends tasks by name)."""
    new = Celery(main, include=TASK_MODULES, set_as_current=False)
    configure(new, settings)
    return new


app = Celery("retrainer", include=TASK_MODULES)
configure(app, get_settings())

from retrainer.tasks import health  # noqa: F401  (its worker signals must be connected in every worker)
