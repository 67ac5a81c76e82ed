"""A changed configuration file reaches a running process (retrainer/config/watch.py), and beat's
schedule follows it (tasks/schedule.py ReloadingScheduler)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from retrainer.config import get_settings, reset_settings
from retrainer.config.watch import ConfigWatch
from tests.support import model_config


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "retrainer.yaml"
    data = {"var_dir": str(tmp_path / "var"), "models": {"ctr": model_config(schedules={"check": "0 2 * * *"})}}

    def write(**changes) -> None:
        data.update(changes)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        st = path.stat()  # a distinct stamp even within the file system's time resolution
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    write()
    monkeypatch.setenv("RETRAINER_CONFIG", str(path))
    reset_settings()
    yield write, data
    reset_settings()


def test_a_model_added_to_the_file_is_known_after_the_next_poll(config) -> None:
    write, data = config
    watch = ConfigWatch()
    assert list(get_settings().models) == ["ctr"]
    assert watch.poll() is None  # unchanged: nothing re-read
    write(models=data["models"] | {"churn": model_config(family="classifier")})
    assert list(watch.poll().models) == ["ctr", "churn"]
    assert list(get_settings().models) == ["ctr", "churn"] and watch.problem is None


def test_a_broken_file_is_refused_and_the_running_settings_stay(config, caplog) -> None:
    write, data = config
    watch = ConfigWatch()
    write(models={"ctr": model_config(training={"test_fraction": 2})})
    assert watch.poll() is None
    assert "configuration change refused" in watch.problem and "test_fraction" in watch.problem
    assert get_settings().model("ctr").training.test_fraction == 0.2
    assert "configuration change refused" in caplog.text


def test_a_change_that_needs_a_restart_says_so_and_applies_the_rest(config, tmp_path: Path) -> None:
    write, data = config
    watch = ConfigWatch()
    before = get_settings().database_url
    write(database_url=f"sqlite:///{tmp_path / 'other.db'}", models={"ctr": model_config(debounce_seconds=9)})
    new = watch.poll()
    assert new.database_url == before, "the process keeps the database it started with"
    assert new.model("ctr").debounce_seconds == 9
    assert watch.problem.startswith("configuration change of database_url needs a restart")


def test_beat_follows_the_file(config, tmp_path: Path) -> None:
    from retrainer.tasks.app import make_app
    from retrainer.tasks.schedule import ReloadingScheduler

    write, data = config
    app = make_app(get_settings())
    scheduler = ReloadingScheduler(app=app, schedule_filename=str(tmp_path / "beat-schedule"), lazy=False)
    scheduler.WATCH_SECONDS = 0
    try:
        assert "check-accuracy:ctr" in scheduler.schedule and "check-accuracy:churn" not in scheduler.schedule
        write(models={"churn": model_config(family="classifier", schedules={"check": "0 4 * * *"})})
        scheduler.tick()
        assert "check-accuracy:churn" in scheduler.schedule and "check-accuracy:ctr" not in scheduler.schedule
        assert scheduler.schedule["check-accuracy:churn"].schedule.hour == {4}
    finally:
        scheduler.close()
