"""GET /healthz: 200 when the database (with its schema) and the broker answer; 503 naming what is down,
without its password. Workers and beat: "degraded" when missing, still 200; "ok" with a real worker and
a real beat (seen by its schedule file on the embedded broker, by its lock in Redis on a Redis broker)."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retrainer.api.health import BEAT_STALE_SECONDS
from retrainer.config import Settings
from retrainer.demo.processes import child_env, start_beat, write_config
from tests.retrainer.api.conftest import client_for
from tests.support import make_settings, wait_until

PASSWORD = "s3cret-Pw"


def test_no_worker_nor_beat_is_degraded_but_200_on_the_embedded_broker(client: TestClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    body = answer.json()
    assert {k: body[k] for k in ("status", "database", "broker", "workers", "queues_without_worker", "beat_seen_at")} == {
        "status": "degraded", "database": "ok", "broker": "ok", "workers": [],
        "queues_without_worker": ["training", "events", "checks", "notifications"], "beat_seen_at": None}
    assert body["beat"].startswith("not seen: no schedule file at ") and body["beat"].endswith(
        "(`retrainer beat` writes it when it starts)")
    assert body["detail"] == f"no worker answered within 1 s; beat {body['beat']}"


@pytest.mark.redis
def test_servers_up_on_redis(tmp_path: Path, db_url: str, redis_url: str) -> None:
    with client_for(make_settings(tmp_path, db_url, broker_url=redis_url)) as client:
        answer = client.get("/healthz")
    assert answer.status_code == 200
    assert {k: answer.json()[k] for k in ("status", "database", "broker", "workers")} == {
        "status": "degraded", "database": "ok", "broker": "ok", "workers": []}


def test_beat_is_stale_after_two_of_its_syncs() -> None:
    from celery.beat import Scheduler

    from retrainer.tasks.schedule import ReloadingScheduler

    assert BEAT_STALE_SECONDS > Scheduler.sync_every + ReloadingScheduler.WATCH_SECONDS


def test_the_embedded_beat_is_seen_by_its_schedule_file(api_settings: Settings, client: TestClient) -> None:
    schedule = api_settings.var_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    schedule.write_bytes(b"")  # what beat's shelve writes at start and every sync
    fresh = client.get("/healthz").json()
    long_ago = time.time() - BEAT_STALE_SECONDS - 60
    os.utime(schedule, (long_ago, long_ago))
    stale = client.get("/healthz").json()
    assert fresh["beat"] == "ok" and fresh["beat_seen_at"]
    assert stale["status"] == "degraded" and stale["beat"].startswith("not seen for ")
    assert int(stale["beat"].split()[3]) >= BEAT_STALE_SECONDS + 60  # seconds since the file was written
    assert stale["detail"].endswith(f"; beat {stale['beat']}")


@pytest.mark.redis
@pytest.mark.worker
def test_ok_with_a_real_worker_and_beat_then_degraded_when_beat_dies(tmp_path: Path, pg_url: str, redis_url: str,
                                                                      start_worker: Any) -> None:
    """On Redis, beat is seen by the lock it holds (tasks/beat_lock.py), not by a file: a killed beat's
    lock expires after beat_lock_seconds, and /healthz says so."""
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, beat_lock_seconds=3)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    worker = start_worker(settings, concurrency=1)
    beat = start_beat(tmp_path / "beat.log", settings.var_dir / "celerybeat-schedule",
                      child_env(write_config(settings, tmp_path / "beat.yaml")), cwd=tmp_path)
    try:
        with client_for(settings) as client:
            def beat_ok() -> dict[str, Any] | None:
                body = client.get("/healthz").json()
                return body if body["beat"] == "ok" else None

            body = wait_until(beat_ok, timeout=30, what=f"beat's lock (log: {beat.output()[-500:]})")
            assert body["status"] == "ok" and "detail" not in body
            assert [name.split("@")[0][:5] for name in body["workers"]] == ["test-"]
            assert body["queues_without_worker"] == []
            renewed = datetime.fromisoformat(body["beat_seen_at"])
            assert 0 <= (datetime.now(UTC) - renewed).total_seconds() <= 3  # renewed every second here
            assert not list(tmp_path.rglob("celerybeat-schedule*")), "no schedule file on Redis"

            os.killpg(beat.proc.pid, signal.SIGKILL)  # no clean release: its lock must expire
            answer = wait_until(lambda: (r := client.get("/healthz")).json()["beat"] != "ok" and r,
                                timeout=10, what="the killed beat's lock to expire")
            worker.stop()
            gone = client.get("/healthz").json()
    finally:
        beat.stop()
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "degraded" and body["beat_seen_at"] is None
    assert body["beat"] == (f"not seen: no beat holds its lock {settings.redis_key_prefix}:redbeat::lock in Redis "
                            "(a running `retrainer beat` holds it, or a standby takes it over)")
    assert body["detail"] == f"beat {body['beat']}" and len(body["workers"]) == 1
    assert gone["workers"] == [] and gone["detail"].startswith("no worker answered within 1 s; beat not seen: ")


def test_each_dead_server_is_named(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"postgresql+psycopg://retrainer:{PASSWORD}@127.0.0.1:1/retrainer",
                             broker_url=f"redis://:{PASSWORD}@127.0.0.1:1/0")
    with client_for(settings) as client:
        answer = client.get("/healthz")
        read = client.get("/models/production")  # any endpoint: 503 with the same line, not a 500
    assert (read.status_code, PASSWORD in read.text) == (503, False)
    assert read.json()["detail"].startswith("database unreachable at postgresql+psycopg://retrainer:***@127.0.0.1:1/")
    assert answer.status_code == 503 and PASSWORD not in answer.text
    body = answer.json()
    assert body["status"] == "unavailable"
    assert body["database"].startswith("database unreachable at postgresql+psycopg://retrainer:***@127.0.0.1:1/retrainer")
    assert body["broker"].startswith("broker unreachable at redis://:***@127.0.0.1:1/0 (connection refused)")
    assert body["detail"].startswith(f"database down: {body['database']}; broker down: {body['broker']}; beat not seen")
    assert body["workers"] is None and body["queues_without_worker"] is None  # not asked: the broker is down


def test_a_database_without_schema_says_run_init(tmp_path: Path) -> None:
    with client_for(make_settings(tmp_path, f"sqlite:///{tmp_path / 'none.db'}")) as client:
        answer = client.get("/healthz")
        assert answer.status_code == 503
        assert answer.json()["database"].endswith("has no retrainer schema; run `retrainer init`")
        assert answer.json()["broker"] == "ok"


@pytest.mark.worker
def test_probes_after_a_worker_died_leave_no_pile_of_broadcasts(tmp_path: Path, sqlite_url: str,
                                                                start_worker: Any) -> None:
    """The embedded broker writes a killed worker a message file at every broadcast, which nobody reads:
    /healthz deletes the expired ones (retrainer/api/health.py sweep_expired_broadcasts)."""
    from retrainer.db.migrate import upgrade

    upgrade(sqlite_url)
    settings = make_settings(tmp_path, sqlite_url)
    worker = start_worker(settings, concurrency=1)
    queue = settings.broker_folder / "queue"
    with client_for(settings) as client:
        (name,) = client.get("/healthz").json()["workers"]
        os.killpg(worker.proc.pid, signal.SIGKILL)  # no clean unbinding: it stays on the broadcast exchange
        worker.proc.wait()
        for _ in range(4):
            assert client.get("/healthz").json()["workers"] == []
    left = list(queue.glob(f"*.{name}.celery.pidbox.msg"))
    assert len(left) == 1, left  # the last probe's, not yet expired when it was swept; 4 without the sweep
