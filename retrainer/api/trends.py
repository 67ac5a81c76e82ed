"""What a model is doing over time and what it does next: the live metric per version (GET
/models/live-metric) and its schedules with the new samples counted against the new-data rule (GET
/models/schedule). The dashboard draws both; a script may read them too."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from retrainer import clock
from retrainer.api.auth import ReadAccess
from retrainer.api.context import ContextDep
from retrainer.api.params import ModelName
from retrainer.config import parse_schedule
from retrainer.services import data_triggers, live_series, reports

router = APIRouter(prefix="/models", tags=["models"], dependencies=[ReadAccess])

# Each schedule of a model (config Schedules) and the check whose recorded outcomes say when it last ran.
SCHEDULE_CHECK = {"check": "accuracy", "monitor": "accept_rate", "drift": "drift", "new_data": "new_data",
                  "errors": "errors", "probation": "probation", "retrain": None}


@router.get("/live-metric")
def live_metric(ctx: ContextDep, model: ModelName,
                days: Annotated[float, Query(gt=0, le=366, description="How far back.")] = 30) -> dict[str, Any]:
    """The accuracy check's live metric per version over time, in buckets of whole hours (at most
    120 points a version), with its threshold: `series[].points[]` = {at, value, count}."""
    with ctx.session() as session:
        return live_series.series(session, model, ctx.settings.model(model), days)


def next_fire(expr: str, last: datetime | None, now: datetime) -> datetime:
    """When a schedule fires next, by Celery's own schedule classes: the first cron time after `now`, or
    the last run + the interval (now + the interval when none is recorded). Beat keeps its own last-run
    times; this reads the recorded checks, so a check run by hand moves the estimate."""
    from celery.schedules import crontab

    spec = parse_schedule(expr)
    if isinstance(spec, timedelta):
        return max((last or now) + spec, now)
    return now + crontab(**spec, nowfun=lambda: now).remaining_estimate(now)


@router.get("/schedule")
def schedule(ctx: ContextDep, model: ModelName) -> dict[str, Any]:
    """Each configured schedule (cron or "@every"), when its check last ran and its outcome, and when it
    runs next; and the labelled rows stored since the last run against `new_data.min_samples`."""
    cfg = ctx.settings.model(model)
    now = clock.now()
    with ctx.session() as session:
        checks = reports.latest_checks(session, model)
        last_run = data_triggers.last_run_start(session, model)
        cap = cfg.new_data.min_samples * data_triggers.COUNT_CAP
        count = data_triggers.new_samples(session, model, last_run, cap)
    entries = {}
    for key, check in SCHEDULE_CHECK.items():
        if not (expr := getattr(cfg.schedules, key)):
            continue
        latest = checks.get(check) if check else None
        last = clock.as_utc(datetime.fromisoformat(latest["at"])) if latest else None
        entries[key] = {"expression": expr, "check": check, "last": latest,
                        "next_at": next_fire(expr, last, now).isoformat()}
    return {"model": model, "now": now.isoformat(), "schedules": entries,
            "new_samples": {"count": count, "at_least": count >= cap, "min_samples": cfg.new_data.min_samples,
                            "min_hours": cfg.new_data.min_hours,
                            "since": last_run.isoformat() if last_run else None}}
