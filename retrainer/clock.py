"""The one clock every service reads, so a demo, a test or a benchmark can replay weeks in seconds.

`now()` is timezone-aware UTC. `set_now()` pins the time in this process; `frozen()` pins it for a
block. Other processes follow a pinned time through a file: when the environment variable
RETRAINER_CLOCK_FILE names one, `now()` in any process is the ISO-8601 time written there (by
`write_file`). `retrainer replay` uses it so its worker's cooldowns, windows and promotion times are in
simulated time too; production never sets it, and a process without it uses the system clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

CLOCK_FILE_ENV = "RETRAINER_CLOCK_FILE"
# A file's mtime moves in ticks of the kernel's clock (a few ms), so a write in the same tick as a read
# leaves (mtime, inode, size) unchanged: a value read that close to its write is not cached (git's
# "racy" rule for its index). Older than this, a changed file always shows a changed key.
_RACY_NS = 50_000_000

_source: Callable[[], datetime] | None = None
_cached: tuple[tuple[str, int, int, int], datetime] | None = None


def now() -> datetime:
    if _source is not None:
        return _source()
    if path := os.environ.get(CLOCK_FILE_ENV):
        return _from_file(path)
    return datetime.now(UTC)


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


def write_file(path: Path, moment: datetime) -> None:
    """Write `moment` where RETRAINER_CLOCK_FILE points, atomically: a reader sees the old or the new time."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(as_utc(moment).isoformat(), encoding="ascii")
    os.replace(tmp, path)


class ClockFileError(RuntimeError):
    """RETRAINER_CLOCK_FILE names a file that cannot be read as a time: simulated time is unknown, and
    falling back to the system clock would silently mix two timelines."""


def _from_file(path: str) -> datetime:
    global _cached
    try:
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_ino, stat.st_size)
        if _cached is not None and _cached[0] == key:
            return _cached[1]
        text = Path(path).read_text(encoding="ascii").strip()
        moment = as_utc(datetime.fromisoformat(text))
    except (OSError, ValueError) as exc:
        raise ClockFileError(f"{CLOCK_FILE_ENV}={path}: cannot read the simulated time "
                             f"({getattr(exc, 'strerror', None) or exc})") from None
    if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
        _cached = (key, moment)
    return moment
