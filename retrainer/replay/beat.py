"""Beat in simulated time: when each of a model's scheduled checks is next due.

The schedules are the model's own (`schedules:` in its configuration: cron lines or "@every 1h"), read
by the parser beat uses; a cron line's next time comes from Celery's own crontab, asked at the
simulated time. An "@every" interval counts from the replay's start, as beat counts from its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from celery.schedules import crontab

from retrainer.config import ModelConfig, parse_schedule

# Beat's per-model schedules (tasks/schedule.py PER_MODEL) -> the check each runs (services/triggers.py
# CHECKS); "retrain" is the scheduled retrain itself. Due at the same time, they run in this order.
CHECK_OF = {"check": "accuracy", "monitor": "accept_rate", "drift": "drift", "new_data": "new_data",
            "errors": "errors", "probation": "probation", "retrain": None}


class SimulatedBeat:
    def __init__(self, cfg: ModelConfig, start: datetime):
        self.specs = {key: parse_schedule(expr) for key in CHECK_OF
                      if (expr := getattr(cfg.schedules, key, None))}
        self.due_at = {key: self._after(key, start) for key in self.specs}

    def _after(self, key: str, moment: datetime) -> datetime:
        spec = self.specs[key]
        if isinstance(spec, timedelta):
            return moment + spec
        return moment + crontab(**spec, nowfun=lambda: moment).remaining_estimate(moment)

    def next_due(self) -> datetime | None:
        return min(self.due_at.values(), default=None)

    def pop_due(self, moment: datetime) -> list[str]:
        """The schedules due at `moment` (in CHECK_OF order), each moved on to its next time after it."""
        due = [key for key in self.specs if self.due_at[key] <= moment]
        for key in due:
            self.due_at[key] = self._after(key, moment)
        return due
