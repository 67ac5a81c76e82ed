"""Beat on a Redis broker (tasks/beat_lock.py): two real `retrainer beat` processes schedule an entry
once, not twice, and the standby takes over when the active one is killed; the schedule in Redis
follows the configuration file (entries removed from it are deleted), written only under the lock."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from retrainer.config import Settings, get_settings, reset_settings
from retrainer.demo.processes import CeleryProcess, child_env, write_config
from retrainer.tasks.schedule import beat_lock_key, redbeat_key_prefix
from tests.support import make_settings, model_config, wait_until

pytestmark = pytest.mark.redis

LOCK_SECONDS = 3  # short, so a takeover is quick to see; production: 30 (Settings.beat_lock_seconds)
RETRAINER = [str(Path(sys.executable).with_name("retrainer"))]
SENT = "Sending due task check-accuracy:ctr"


def every_second(tmp_path: Path, redis_url: str, **models: Any) -> Settings:
    return make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", broker_url=redis_url,
                         beat_lock_seconds=LOCK_SECONDS,
                         models=models or {"ctr": model_config(schedules={"check": "@every 1s"})})


def sent_at(client: redis.Redis, settings: Settings, task: str = "checks.check_accuracy") -> list[datetime]:
    """When beat published each `task` message still in the checks queue (no worker consumes it): the
    message's expiry minus the entry's `expires` (3600 s, tasks/schedule.py)."""
    times = []
    for raw in client.lrange(f"{settings.redis_key_prefix}:checks", 0, -1):
        headers = json.loads(raw)["headers"]
        if headers["task"] == task:
            times.append(datetime.fromisoformat(headers["expires"]) - timedelta(seconds=3600))
    return sorted(times)


def gaps(times: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]


def test_two_beats_schedule_once_and_the_standby_takes_over(tmp_path: Path, redis_url: str) -> None:
    settings = every_second(tmp_path, redis_url)
    env = child_env(write_config(settings, tmp_path / "retrainer.yaml"))
    beats = [CeleryProcess(["beat", "--schedule-file", str(tmp_path / f"beat{i}-schedule"), "-l", "info"],
                           tmp_path / f"beat{i}.log", env, tmp_path, program=[*RETRAINER]) for i in (1, 2)]
    client = redis.Redis.from_url(redis_url)
    try:
        def roles() -> tuple[CeleryProcess, CeleryProcess] | None:
            for beat in beats:
                assert beat.alive(), beat.output()[-2000:]
            active = [b for b in beats if "this beat schedules" in b.output()]
            standby = [b for b in beats if "standing by" in b.output()]
            return (active[0], standby[0]) if len(active) == len(standby) == 1 else None

        active, standby = wait_until(roles, timeout=40, interval=0.2, what="one active and one standby beat")
        # ~8 s of both beats running side by side
        before = wait_until(lambda: (t := sent_at(client, settings)) and len(t) >= 8 and t, timeout=20,
                            what="8 scheduled runs")
        span = (before[-1] - before[0]).total_seconds()
        assert len(before) <= span + 2, f"{len(before)} runs in {span:.1f} s: scheduled twice"
        assert min(gaps(before)) > 0.5, gaps(before)  # a second beat would send its copy at the same moment
        assert SENT not in standby.output()

        killed_at = datetime.now(before[0].tzinfo)
        os.killpg(active.proc.pid, signal.SIGKILL)  # no clean release: its lock must expire
        active.proc.wait()
        after = wait_until(lambda: [t for t in sent_at(client, settings) if t > killed_at][3:] and
                           [t for t in sent_at(client, settings) if t > killed_at],
                           timeout=LOCK_SECONDS + 15, what="the standby scheduling")
        assert "this beat schedules" in standby.output() and SENT in standby.output()
        last_before_kill = max(t for t in sent_at(client, settings) if t <= killed_at)
        takeover = (after[0] - last_before_kill).total_seconds()
        assert takeover <= LOCK_SECONDS + LOCK_SECONDS / 3 + 1.5, f"took {takeover:.1f} s to take over"
        assert min(gaps(sent_at(client, settings))) > 0.5
    finally:
        for beat in beats:
            beat.stop()
        client.close()


@pytest.fixture
def config(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """This process's settings from a file on a Redis broker; `write(models)` changes the file."""
    path = tmp_path / "retrainer.yaml"
    data = every_second(tmp_path, redis_url, ctr=model_config(schedules={"check": "0 2 * * *"})).model_dump(mode="json")

    def write(**models: Any) -> None:
        data["models"] = models
        path.write_text(yaml.safe_dump(data))
        st = path.stat()  # a distinct stamp even within the file system's time resolution
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    write(ctr=data["models"]["ctr"])
    monkeypatch.setenv("RETRAINER_CONFIG", str(path))
    reset_settings()
    yield write
    reset_settings()


def schedule_in_redis(client: redis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    """Entry name -> its stored definition, for the entries both in RedBeat's sorted set and stored."""
    prefix = redbeat_key_prefix(settings)
    stored = {}
    for key in client.zrange(prefix + ":schedule", 0, -1):
        if definition := client.hget(key, "definition"):
            stored[key.removeprefix(prefix)] = json.loads(definition)
    assert client.smembers(prefix + ":statics") == set(stored), "the configured names are what is stored"
    return stored


def test_the_schedule_in_redis_follows_the_file_and_only_the_lock_holder_writes(config: Any) -> None:
    from retrainer.tasks.app import make_app
    from retrainer.tasks.beat_lock import LockedScheduler

    write = config
    settings = get_settings()
    client = redis.Redis.from_url(settings.broker_url, decode_responses=True)
    first = LockedScheduler(app=make_app(settings))
    standby = LockedScheduler(app=make_app(settings))  # it read the file while ctr was on it
    first.WATCH_SECONDS = standby.WATCH_SECONDS = 0
    try:
        assert schedule_in_redis(client, settings) == {}, "nothing is written before the lock is held"
        assert first.tick() <= LOCK_SECONDS / 3 and first.lock is not None
        assert "check-accuracy:ctr" in schedule_in_redis(client, settings)

        write(churn=model_config(family="classifier", schedules={"check": "0 4 * * *"}))
        first.tick()
        stored = schedule_in_redis(client, settings)
        assert "check-accuracy:churn" in stored and "check-accuracy:ctr" not in stored
        assert not client.exists(redbeat_key_prefix(settings) + "check-accuracy:ctr"), "deleted, not left firing"
        assert stored["check-accuracy:churn"]["schedule"]["hour"] == "4"

        assert standby.tick() == LOCK_SECONDS / 3 and standby.lock is None
        assert "check-accuracy:ctr" not in schedule_in_redis(client, settings), "a standby writes nothing"

        write(churn=model_config(family="classifier", schedules={"check": "0 5 * * *"}))
        client.delete(beat_lock_key(settings))  # the lock expired (a pause longer than it, a Redis restart)
        standby.tick()  # takes it, and the file as it is now
        assert standby.lock is not None
        assert schedule_in_redis(client, settings)["check-accuracy:churn"]["schedule"]["hour"] == "5"
        assert first.tick() == LOCK_SECONDS / 3 and first.lock is None, "the old holder stands by"
        assert client.get(beat_lock_key(settings)) == standby.lock.local.token.decode()
        assert 0 < client.pttl(beat_lock_key(settings)) <= LOCK_SECONDS * 1000
    finally:
        first.close()
        standby.close()
    assert not client.exists(beat_lock_key(settings)), "a clean stop hands the lock over at once"
    client.close()


def test_only_a_redis_broker_uses_the_lock(tmp_path: Path, redis_url: str) -> None:
    from retrainer.tasks.app import make_app

    conf = make_app(every_second(tmp_path, redis_url)).conf
    assert conf.beat_scheduler == "retrainer.tasks.beat_lock:LockedScheduler"
    assert conf.redbeat_redis_url == redis_url and conf.redbeat_key_prefix.startswith("rt-")
    embedded = make_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}")).conf
    assert embedded.beat_scheduler == "retrainer.tasks.schedule:ReloadingScheduler"


def test_a_redis_outage_fails_a_tick_not_beat(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from retrainer.tasks.app import make_app
    from retrainer.tasks.beat_lock import LockedScheduler

    app = make_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", broker_url="redis://127.0.0.1:1/13",
                                 beat_lock_seconds=LOCK_SECONDS))
    scheduler = LockedScheduler(app=app)
    try:
        assert scheduler.tick() == 1 and scheduler.tick() == 1 and scheduler.lock is None  # tried again soon
    finally:
        scheduler.close()
    assert caplog.text.count("beat: Redis did not answer (ConnectionError: ") == 1  # once per outage
