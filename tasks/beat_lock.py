"""Beat on a Redis broker: run two or more `retrainer beat`; the one holding a lock in Redis schedules,
the others stand by and one of them takes over within `beat_lock_seconds` when it dies.

RedBeat (celery-redbeat) keeps the schedule in Redis, so whichever beat holds the lock continues from the
last run times the previous one recorded. Its own lock blocks inside Celery's start-up hook, after the
schedule was already written; here the lock is taken inside `tick` instead, so:
- a standby writes nothing to Redis: one started with an older configuration file cannot bring back an
  entry the active beat removed;
- the active beat renews the lock at every tick (at least every third of `beat_lock_seconds`) and
  schedules only after a renewal succeeded; a beat that finds its lock gone (a pause longer than the
  lock, or a Redis restart) stops scheduling and stands by, it never fires next to the new holder;
- a Redis outage is waited out in place (a failed tick, logged), like the file scheduler's publish errors.

The configuration file is followed as by ReloadingScheduler (tasks/schedule.py), and an entry removed from
it is deleted from Redis, not left firing. `/healthz` reads the lock's TTL as beat's heartbeat."""

from __future__ import annotations

import time
from typing import Any

from celery.utils.log import get_logger
from kombu.utils.url import maybe_sanitize_url
from redbeat.schedulers import RedBeatScheduler, get_redis
from redis.exceptions import LockError, RedisError

from retrainer.config import Settings, get_settings
from retrainer.config.watch import ConfigWatch
from retrainer.tasks.schedule import ReloadingScheduler, beat_schedule

logger = get_logger("celery.beat")  # beat's own logger: its lines land in beat's log at its level


class LockedScheduler(RedBeatScheduler):
    WATCH_SECONDS = ReloadingScheduler.WATCH_SECONDS
    OUTAGE_RETRY_SECONDS = 1.0  # a Redis restart takes seconds: schedule again soon after it answers

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.watch = ConfigWatch()
        self.watched_at = time.monotonic()
        self.standing_by = self.redis_down = False
        super().__init__(app, *args, **kwargs)
        conf = app.redbeat_conf  # tasks/schedule.py beat_conf; beat_lock_seconds is a restart key (config/watch.py)
        self.lock_seconds, self.lock_name = conf.lock_timeout, conf.key_prefix + ":lock"  # = beat_lock_key()
        # RedBeat peeks this far ahead for its next wake-up; beat never sleeps longer than a renewal anyway
        self.max_interval = min(self.max_interval, self.WATCH_SECONDS, self.renew_seconds)

    @property
    def renew_seconds(self) -> float:
        """The longest sleep between ticks: the lock is renewed (or, standing by, tried) this often."""
        return self.lock_seconds / 3

    def setup_schedule(self) -> None:
        """Nothing at start-up: the schedule is written once the lock is held (hold_lock)."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            if not self.hold_lock():
                return self.renew_seconds
            if time.monotonic() - self.watched_at >= self.WATCH_SECONDS:
                self.watched_at = time.monotonic()
                if (new := self.watch.poll()) is not None:
                    self.sync_schedule(new)
            interval = min(super().tick(*args, **kwargs), self.WATCH_SECONDS, self.renew_seconds)
        except RedisError as exc:  # the lock is kept if still ours: the next renewal tells
            if not self.redis_down:
                logger.warning("beat: Redis did not answer (%s: %s); scheduling resumes when it does",
                               type(exc).__name__, exc)
            self.redis_down = True
            return min(self.renew_seconds, self.OUTAGE_RETRY_SECONDS)
        if self.redis_down:
            logger.warning("beat: Redis answers again")
            self.redis_down = False
        return interval

    def hold_lock(self) -> bool:
        """Renew the lock this beat holds, or take it if free; False: another beat holds it."""
        if self.lock is not None:
            try:
                self.lock.extend(self.lock_seconds, replace_ttl=True)
                return True
            except LockError:  # it expired (and maybe another beat took it): never schedule beside it
                logger.error("beat: lost the lock %s; not scheduling, standing by", self.lock_name)
                self.lock = None
        lock = get_redis(self.app).lock(self.lock_name, timeout=self.lock_seconds, blocking=False)
        if not lock.acquire():
            if not self.standing_by:
                logger.info("beat: another beat holds the lock %s: standing by, ready to take over within %s s "
                            "of it stopping", self.lock_name, self.lock_seconds)
                self.standing_by = True
            return False
        self.lock, self.standing_by = lock, False
        logger.info("beat: acquired the lock %s: this beat schedules", self.lock_name)
        self.watch.poll()  # a standby may have waited through changes of the file
        self.watched_at = time.monotonic()
        self.sync_schedule(get_settings())
        return True

    def sync_schedule(self, settings: Settings) -> None:
        """Redis's schedule made the configuration's: entries added or changed (keeping their last run
        time), and entries no longer configured deleted."""
        entries = beat_schedule(settings)
        client = get_redis(self.app)
        statics = self.app.redbeat_conf.statics_key  # the names written from the configuration
        for name in sorted(set(client.smembers(statics)) - set(entries)):
            self.Entry(name, app=self.app).delete()
            client.srem(statics, name)
            logger.info("beat: removed %s from the schedule (no longer configured)", name)
        self.install_default_entries(entries)  # Celery's result cleanup, where the result backend needs it
        self.update_from_dict(entries)
        client.sadd(statics, *entries)  # never empty: reconcile and compaction are always scheduled

    def close(self) -> None:
        """Hand the lock over at once on a clean stop (a killed beat's lock expires instead)."""
        try:
            if self.lock is not None and self.lock.owned():
                self.lock.release()
                logger.info("beat: released the lock %s", self.lock_name)
        except RedisError:  # expired or unreachable: it frees itself
            pass
        self.lock = None
        super().close()

    @property
    def info(self) -> str:
        return (f"       . redis -> {maybe_sanitize_url(self.app.redbeat_conf.redis_url)}\n"
                f"       . lock -> `{self.lock_name}` {self.lock_seconds} s (one beat schedules, others stand by)")
