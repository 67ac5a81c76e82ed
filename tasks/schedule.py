"""The beat schedule, built from each model's configured schedules (cron lines or "@every 30s")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab, schedule

from retrainer.config import Settings, parse_schedule


def as_celery_schedule(expr: str) -> Any:
    spec = parse_schedule(expr)
    return crontab(**spec) if isinstance(spec, dict) else schedule(run_every=spec)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for name, cfg in settings.models.items():
        if cfg.schedules.check:
            entries[f"check-accuracy:{name}"] = {
                "task": "checks.check_accuracy", "schedule": as_celery_schedule(cfg.schedules.check),
                "kwargs": {"model": name}, "options": {"queue": "checks", "expires": 3600},
            }
        if cfg.schedules.monitor:
            entries[f"monitor:{name}"] = {
                "task": "checks.monitor", "schedule": as_celery_schedule(cfg.schedules.monitor),
                "kwargs": {"model": name}, "options": {"queue": "checks", "expires": 3600},
            }
        if cfg.schedules.retrain:
            entries[f"retrain:{name}"] = {
                "task": "checks.request_retrain", "schedule": as_celery_schedule(cfg.schedules.retrain),
                "kwargs": {"model": name, "trigger": "schedule"}, "options": {"queue": "checks", "expires": 3600},
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
