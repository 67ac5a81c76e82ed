"""The beat schedule, built from each model's configured schedules (cron lines or "@every 30s")."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from celery.beat import PersistentScheduler
from celery.schedules import crontab, schedule

from retrainer.config import Settings, parse_schedule
from retrainer.config.watch import ConfigWatch


def as_celery_schedule(expr: str) -> Any:
    spec = parse_schedule(expr)
    return crontab(**spec) if isinstance(spec, dict) else schedule(run_every=spec)


# Each model schedule -> (entry name prefix, task, extra kwargs); the entry is "<prefix>:<model>".
PER_MODEL = {
    "check": ("check-accuracy", "checks.check_accuracy", {}),
    "monitor": ("monitor", "checks.monitor", {}),
    "drift": ("drift", "checks.check_drift", {}),
    "new_data": ("new-data", "checks.check_new_data", {}),
    "errors": ("errors", "checks.check_errors", {}),
    "probation": ("probation", "checks.check_probation", {}),
    "retrain": ("retrain", "checks.request_retrain", {"trigger": "schedule"}),
}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for name, cfg in settings.models.items():
        for key, (prefix, task, kwargs) in PER_MODEL.items():
            if expr := getattr(cfg.schedules, key):
                entries[f"{prefix}:{name}"] = {
                    "task": task, "schedule": as_celery_schedule(expr), "kwargs": {"model": name, **kwargs},
                    "options": {"queue": "checks", "expires": 3600},
                }
    every = settings.recovery.reconcile_every_seconds
    entries["reconcile"] = {  # repairs what crashes leave behind (services/reconcile.py)
        "task": "checks.reconcile", "schedule": schedule(run_every=timedelta(seconds=every)),
        "options": {"queue": "checks", "expires": every},
    }
    every = settings.compact_every_seconds
    entries["compact-observations"] = {  # training rows into columnar blocks (services/blocks.py)
        "task": "checks.compact_observations", "schedule": schedule(run_every=timedelta(seconds=every)),
        "options": {"queue": "checks", "expires": every},
    }
    return entries


def uses_beat_lock(settings: Settings) -> bool:
    """Automatic by broker, not a setting: a Redis broker is a server every beat can reach, and there the
    lock (tasks/beat_lock.py) costs one key and a round trip per tick, while running without it would
    only add a way to fire every schedule twice. The embedded broker is one machine and one beat: the
    file-backed ReloadingScheduler, no server needed."""
    return settings.broker_url.startswith("redis")


def redbeat_key_prefix(settings: Settings) -> str:
    """RedBeat's keys under the configured prefix, so deployments (and test runs) sharing a Redis never meet."""
    return f"{settings.redis_key_prefix}:redbeat:"


def beat_lock_key(settings: Settings) -> str:
    return redbeat_key_prefix(settings) + ":lock"  # RedBeat's own naming: "<prefix>:redbeat::lock"


def beat_conf(settings: Settings) -> dict[str, Any]:
    """The Celery settings that choose beat's scheduler (uses_beat_lock) and configure RedBeat."""
    if not uses_beat_lock(settings):
        return {"beat_scheduler": "retrainer.tasks.schedule:ReloadingScheduler"}  # follows a changed retrainer.yaml
    return {
        "beat_scheduler": "retrainer.tasks.beat_lock:LockedScheduler",
        "redbeat_redis_url": settings.broker_url,  # explicit: RedBeat's fallback to broker_url is deprecated
        "redbeat_key_prefix": redbeat_key_prefix(settings),
        "redbeat_lock_key": None,  # RedBeat's blocking lock at start-up is off: LockedScheduler holds its own
        "redbeat_lock_timeout": settings.beat_lock_seconds,  # ...for this long after each renewal
        # explicit (else RedBeat reads broker_transport_options); a hung Redis fails a tick instead of freezing it
        "redbeat_redis_options": {"socket_timeout": 5, "socket_connect_timeout": 5},
    }


class ReloadingScheduler(PersistentScheduler):
    """Celery's file-backed scheduler that follows a changed configuration file: a model added, removed
    or rescheduled is on the schedule within WATCH_SECONDS, without restarting beat."""

    WATCH_SECONDS = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.watch = ConfigWatch()
        self.watched_at = time.monotonic()
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if time.monotonic() - self.watched_at >= self.WATCH_SECONDS:
            self.watched_at = time.monotonic()
            if (new := self.watch.poll()) is not None:
                self.merge_inplace(beat_schedule(new))  # beat re-heaps when its schedule changed
        return min(super().tick(*args, **kwargs), self.WATCH_SECONDS)
