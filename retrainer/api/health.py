"""GET /healthz: can this API do its work, and is the rest of retrainer running? Never needs a token:
probes call it.

- `database`, `broker`: "ok" when they answer (the database with the migrated schema), else why not
  (URLs with passwords masked). Either down is 503: the API cannot serve.
- `workers`: the names of the workers that answered a remote-control broadcast within WORKERS_TIMEOUT
  (null when the broker is down or its transport has no remote control), and `queues_without_worker`:
  retrainer's queues none of them consumes, where work would wait. On the embedded broker each probe
  first deletes the expired broadcasts a dead worker was sent (sweep_expired_broadcasts).
- `beat`: "ok" when a beat is scheduling, else why not; `beat_seen_at` is when it last showed it.
  On a Redis broker (tasks/beat_lock.py) the beat that schedules holds a lock in Redis whose TTL it sets
  back to `beat_lock_seconds` at least every third of that: the lock exists while it runs (a stopped
  beat releases it, a killed one's expires), and its last renewal is `beat_lock_seconds` minus the TTL
  ago. Standby beats hold nothing and are not counted. On the embedded broker, beat's schedule file
  must have been written within BEAT_STALE_SECONDS: beat keeps no other trace a reader can see (its
  reconcile pass records nothing when there is nothing to repair), and Celery's file-backed scheduler
  writes that file when it starts and then at least every `Scheduler.sync_every` (180 s), waking every
  ReloadingScheduler.WATCH_SECONDS (10 s) at most: a file older than both, plus a margin, means no
  beat is running on it. The file is the one the configuration names (var_dir/celerybeat-schedule);
  a beat run with another `--schedule-file` is not seen.

No worker, a queue nobody consumes, or a silent beat make `status` "degraded" with a `detail`, and
stay 200: the API itself still serves, and a container probe of the API must not restart the API
for a worker outage (a restart mends nothing there). Alert on "degraded", or on /metrics."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from retrainer import clock
from retrainer.api.context import Context, ContextDep
from retrainer.config import Settings
from retrainer.services.errors import ServiceUnavailable

router = APIRouter(tags=["health"])

WORKERS_TIMEOUT = 1.0  # seconds: each worker answers in milliseconds; the wait is for the ones that do not
# Celery's Scheduler.sync_every (180 s) + ReloadingScheduler.WATCH_SECONDS (10 s) + a margin for a slow disk
# (tests/retrainer/api/test_health.py holds it above the first two). The Celery layer is imported only
# when called: at import it would configure the module-level app from this process's environment.
BEAT_STALE_SECONDS = 240
# The files a shelve of that name may be, by the dbm module Python has (gnu, ndbm, dumb).
SHELVE_SUFFIXES = ("", ".db", ".dat", ".dir")


def sweep_expired_broadcasts(queue_folder: Path, now: float) -> int:
    """Delete the remote-control messages past their expiry from the embedded broker's folder; how many.

    A worker that died without unbinding (killed, its container gone) stays bound to the broadcast
    exchange, and kombu's filesystem transport writes it a file at every broadcast that nobody reads: a
    probe every 15 s would leave 5,760 a day per dead worker. Celery stamps each with `expires` (send
    time + the broadcast's timeout) and a live worker drops an expired one unread, so deleting it loses
    nothing. A file still being written (not yet JSON) or already taken by a worker is skipped."""
    swept = 0
    for path in queue_folder.glob("*.celery.pidbox.msg"):
        try:
            expires = json.loads(path.read_bytes())["headers"].get("expires")
            if expires and expires < now:
                path.unlink()
                swept += 1
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return swept


def workers(ctx: Context) -> dict[str, list[str]] | None:
    """Every worker that answers within WORKERS_TIMEOUT, with the queues it consumes."""
    from retrainer.tasks.enqueue import workers_on

    if ctx.settings.broker_url.startswith("filesystem"):
        sweep_expired_broadcasts(ctx.settings.broker_folder / "queue", time.time())
    # No queue is named "": the search never stops early, so every worker that answers is heard.
    return workers_on("", via=ctx.celery(), timeout=WORKERS_TIMEOUT)


def beat_seen_at(schedule_file: Path) -> datetime | None:
    """When beat last wrote its schedule file, or None when there is none."""
    times = [path.stat().st_mtime for suffix in SHELVE_SUFFIXES
             if (path := schedule_file.with_name(schedule_file.name + suffix)).is_file()]
    return datetime.fromtimestamp(max(times), UTC) if times else None


def beat_problem(schedule_file: Path, seen: datetime | None, now: datetime) -> str | None:
    if seen is None:
        return f"not seen: no schedule file at {schedule_file} (`retrainer beat` writes it when it starts)"
    age = (now - seen).total_seconds()
    if age > BEAT_STALE_SECONDS:
        return f"not seen for {age:.0f} s: its schedule file {schedule_file} was last written at {seen.isoformat()}"
    return None


def beat_lock_renewed_at(settings: Settings, now: datetime) -> datetime | None:
    """When the beat holding the lock last renewed it, or None when no beat holds it."""
    import redis

    from retrainer.tasks.schedule import beat_lock_key

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        ttl_ms = client.pttl(beat_lock_key(settings))  # -2: no such key (-1, no expiry, is never beat's)
    finally:
        client.close()
    return now - timedelta(seconds=settings.beat_lock_seconds - ttl_ms / 1000) if ttl_ms > 0 else None


def beat_by_lock(settings: Settings, broker_ok: bool, now: datetime) -> tuple[datetime | None, str | None]:
    from retrainer.tasks.health import broker_reason
    from retrainer.tasks.schedule import beat_lock_key

    if not broker_ok:
        return None, "not seen: its lock is in Redis, which is down"
    try:
        seen = beat_lock_renewed_at(settings, now)
    except Exception as exc:  # noqa: BLE001  Redis went away since its check: say so, still serve
        return None, f"not seen: its lock in Redis could not be read ({broker_reason(exc)})"
    if seen is None:
        return None, (f"not seen: no beat holds its lock {beat_lock_key(settings)} in Redis "
                      "(a running `retrainer beat` holds it, or a standby takes it over)")
    return seen, None


@router.get("/healthz", responses={503: {"description": "The database or the broker is down."}})
def healthz(ctx: ContextDep) -> JSONResponse:
    from retrainer.tasks.app import QUEUES
    from retrainer.tasks.health import broker_reason, check_broker, check_database

    checks: dict[str, Any] = {}
    for name, probe in (("database", lambda: check_database(ctx.settings.database_url)),
                        ("broker", lambda: check_broker(ctx.celery()))):
        try:
            probe()
        except ServiceUnavailable as exc:
            checks[name] = str(exc)
        else:
            checks[name] = "ok"
    down = {name: problem for name, problem in checks.items() if problem != "ok"}
    degraded: list[str] = []

    seen_workers = None
    if checks["broker"] == "ok":
        try:
            seen_workers = workers(ctx)
        except Exception as exc:  # noqa: BLE001  the broker went away since its check: say so, still serve
            degraded.append(f"workers not asked: {broker_reason(exc)}")
    unserved = None
    if seen_workers is not None:
        unserved = [q for q in QUEUES if not any(q in consumed for consumed in seen_workers.values())]
        if not seen_workers:
            degraded.append(f"no worker answered within {WORKERS_TIMEOUT:g} s")
        elif unserved:
            degraded.append(f"no worker consumes {', '.join(unserved)}")

    from retrainer.tasks.schedule import uses_beat_lock

    now = datetime.now(UTC)  # the file's and the lock's times are the system's, whatever clock.now() is pinned to
    if uses_beat_lock(ctx.settings):
        seen, beat = beat_by_lock(ctx.settings, checks["broker"] == "ok", now)
    else:
        schedule_file = Path(ctx.celery().conf.beat_schedule_filename)
        seen = beat_seen_at(schedule_file)
        beat = beat_problem(schedule_file, seen, now)
    if beat is not None:
        degraded.append(f"beat {beat}")

    status = "unavailable" if down else "degraded" if degraded else "ok"
    body = {"status": status, **checks,
            "workers": sorted(seen_workers) if seen_workers is not None else None, "queues_without_worker": unserved,
            "beat": beat or "ok", "beat_seen_at": seen.isoformat() if seen else None, "checked_at": clock.now().isoformat()}
    if down or degraded:
        body["detail"] = "; ".join([f"{name} down: {problem}" for name, problem in down.items()] + degraded)
    return JSONResponse(body, status_code=503 if down else 200)
