"""The one clock every service reads, so a demo, a test or a benchmark can replay weeks in seconds.

`now()` is timezone-aware UTC. `set_now()` pins the time in this process; `frozen()` pins it for a
block. Worker processes use the system clock: replayed history is written with past timestamps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_source: Callable[[], datetime] | None = None


def now() -> datetime:
    return _source() if _source is not None else datetime.now(UTC)


def set_now(moment: datetime | None) -> None:
    """Pin the clock at `moment` (aware or UTC-naive); None returns to the system clock."""
    global _source
    if moment is None:
        _source = None
        return
    pinned = as_utc(moment)
    _source = lambda: pinned


@contextmanager
def frozen(moment: datetime) -> Iterator[None]:
    previous = _source
    set_now(moment)
    try:
        yield
    finally:
        globals()["_source"] = previous


def as_utc(moment: datetime) -> datetime:
    """Databases hand back naive datetimes (SQLite); everything stored is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
