"""retrainer.clock: one settable UTC clock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from retrainer import clock


@pytest.fixture(autouse=True)
def system_clock_after() -> Iterator[None]:
    yield
    clock.set_now(None)


def test_now_is_aware_utc_and_follows_the_system_clock() -> None:
    before = datetime.now(UTC)
    value = clock.now()
    after = datetime.now(UTC)
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert before <= value <= after


def test_set_now_pins_and_none_releases() -> None:
    moment = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    clock.set_now(moment)
    assert clock.now() == moment
    assert clock.now() == moment  # stays pinned
    clock.set_now(None)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)


def test_set_now_accepts_naive_as_utc_and_converts_other_zones() -> None:
    clock.set_now(datetime(2024, 3, 1, 12, 0))
    assert clock.now() == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert clock.now().tzinfo == UTC
    clock.set_now(datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert clock.now().utcoffset() == timedelta(0)


def test_frozen_restores_the_previous_source() -> None:
    outer = datetime(2024, 1, 1, tzinfo=UTC)
    inner = datetime(2024, 6, 1, tzinfo=UTC)
    clock.set_now(outer)
    with clock.frozen(inner):
        assert clock.now() == inner
    assert clock.now() == outer


def test_frozen_restores_system_clock_even_on_error() -> None:
    with pytest.raises(RuntimeError), clock.frozen(datetime(2000, 1, 1, tzinfo=UTC)):
        assert clock.now().year == 2000
        raise RuntimeError("boom")
    assert clock.now().year >= 2024


def test_as_utc() -> None:
    naive = datetime(2024, 5, 5, 8, 0)
    assert clock.as_utc(naive) == datetime(2024, 5, 5, 8, 0, tzinfo=UTC)
    assert clock.as_utc(naive).tzinfo == UTC
    eastern = datetime(2024, 5, 5, 8, 0, tzinfo=timezone(timedelta(hours=-5)))
    converted = clock.as_utc(eastern)
    assert converted == datetime(2024, 5, 5, 13, 0, tzinfo=UTC)
    assert converted.hour == 13 and converted.tzinfo == UTC
    aware = datetime(2024, 5, 5, 8, 0, tzinfo=UTC)
    assert clock.as_utc(aware) == aware


# --- the clock file: simulated time shared with other processes (retrainer replay) ---------------

def test_the_clock_file_is_now_in_a_process_that_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clock"
    first, second = datetime(2024, 3, 1, 12, 0, tzinfo=UTC), datetime(2024, 3, 1, 13, 0, tzinfo=UTC)
    clock.write_file(path, first)
    monkeypatch.setenv(clock.CLOCK_FILE_ENV, str(path))
    assert clock.now() == first
    clock.write_file(path, second)  # within the same mtime tick as the read above: must not be served stale
    assert clock.now() == second
    clock.set_now(datetime(2000, 1, 1, tzinfo=UTC))  # a pin in this process wins over the file
    assert clock.now().year == 2000
    clock.set_now(None)
    assert clock.now() == second


def test_the_clock_file_is_read_again_only_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clock"
    clock.write_file(path, datetime(2024, 3, 1, 12, 0, tzinfo=UTC))
    old = time.time_ns() - 10**10  # written ten seconds ago: past the racy tick, so the value is cached
    os.utime(path, ns=(old, old))
    monkeypatch.setenv(clock.CLOCK_FILE_ENV, str(path))
    assert clock.now().hour == 12
    path.write_text(datetime(2024, 3, 1, 15, 0, tzinfo=UTC).isoformat())  # same size, same inode ...
    os.utime(path, ns=(old, old))  # ... and the same mtime: the cached value is what is read
    assert clock.now().hour == 12
    os.utime(path, ns=(old + 1, old + 1))  # any change of mtime: read again
    assert clock.now().hour == 15


def test_an_unreadable_clock_file_is_an_error_not_the_system_clock(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(clock.CLOCK_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(clock.ClockFileError, match="RETRAINER_CLOCK_FILE=.*missing: cannot read the simulated time"):
        clock.now()
    (tmp_path / "bad").write_text("next tuesday")
    monkeypatch.setenv(clock.CLOCK_FILE_ENV, str(tmp_path / "bad"))
    with pytest.raises(clock.ClockFileError, match="bad: cannot read the simulated time"):
        clock.now()


def test_a_child_process_follows_the_clock_file(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    clock.write_file(path, datetime(2031, 7, 4, 9, 30, tzinfo=UTC))
    env = os.environ | {clock.CLOCK_FILE_ENV: str(path)}
    done = subprocess.run([sys.executable, "-c", "from retrainer import clock; print(clock.now().isoformat())"],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "2031-07-04T09:30:00+00:00"


def test_the_clock_variable_is_no_setting_typo() -> None:
    from retrainer.config import unknown_env_warnings

    assert unknown_env_warnings({clock.CLOCK_FILE_ENV: "/tmp/clock"}) == []
