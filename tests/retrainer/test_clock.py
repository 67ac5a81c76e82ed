"""retrainer.clock: one settable UTC clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

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
