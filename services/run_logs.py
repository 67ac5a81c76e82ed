"""A run's own log lines (training_runs.logs, `retrainer logs RUN_ID`).

While a retrain runs, `capture()` collects what retrainer's loggers say at INFO and above and what
every other logger (the family libraries: xgboost, prophet, cmdstanpy ...) says at WARNING and above,
Python `warnings` included (routed through the `py.warnings` logger, each shown once per run). Lines
are time-stamped in UTC, secrets are masked, and only the last `limit_bytes` are kept, saying how much
was cut. `store()` writes them on the run afterwards, in a small update of their own.

The handler sits on the root logger of this process: a worker child runs one task at a time (prefork),
so what it hears during the task is the task's (its heartbeat thread included).
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer.config import Settings
from retrainer.db.records import TrainingRun

LIMIT_BYTES = 64 * 1024
OWN_LOGGER = "retrainer"
# user:PASSWORD@ in any URL, and password=... in a query string or a message
_URL_PASSWORD = re.compile(r"(?P<keep>[A-Za-z][\w+.-]*://[^\s:/@]*:)[^\s@/]+@")
_PASSWORD_PARAM = re.compile(r"(?i)(?P<keep>password=)[^&\s]+")


class _Formatter(logging.Formatter):
    converter = time.gmtime

    def __init__(self, secrets: Iterable[str]):
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
        # Longest first: a password that is part of a longer secret must not leave the rest showing.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record), self.secrets)


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each known secret, URL password and password= value replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\g<keep>***@", text)
    return _PASSWORD_PARAM.sub(r"\g<keep>***", text)


def secret_values(settings: Settings) -> list[str]:
    """What must never be stored with a run's logs: the webhook URL and every password in a URL."""
    urls = [settings.database_url, settings.broker_url, settings.result_backend]
    for cfg in settings.models.values():
        source = cfg.training.source
        if source is not None and source.database_url is not None:
            urls.append(source.database_url.get_secret_value())
    found = [settings.slack_webhook_url.get_secret_value()] if settings.slack_webhook_url else []
    for url in urls:
        try:
            password = sa.make_url(url).password
        except Exception:  # noqa: BLE001  not a URL SQLAlchemy can parse: the regexes still mask user:pass@
            password = None
        if password:
            found.append(str(password))
    return found


class _Collector(logging.Handler):
    """Keeps the newest lines within `limit` bytes, counting what it dropped."""

    def __init__(self, formatter: logging.Formatter, limit: int):
        super().__init__(logging.INFO)
        self.setFormatter(formatter)
        self.limit = limit
        self.lines: deque[tuple[str, int]] = deque()
        self.size = self.cut_lines = self.cut_bytes = 0

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == OWN_LOGGER or record.name.startswith(OWN_LOGGER + ".")
        return own or record.levelno >= logging.WARNING

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001  a bad format string must not break the run
            line = f"{record.levelname} {record.name}: (unformattable log record)"
        size = len(line.encode()) + 1
        if size > self.limit:  # one huge line: keep its head
            line = line.encode()[: self.limit // 2].decode(errors="ignore") + " … [line cut]"
            size = len(line.encode()) + 1
        self.lines.append((line, size))  # under the handler's lock (Handler.handle)
        self.size += size
        while self.size > self.limit:
            _, dropped = self.lines.popleft()
            self.size -= dropped
            self.cut_lines += 1
            self.cut_bytes += dropped

    def text(self) -> str:
        body = "\n".join(line for line, _ in self.lines)
        if self.cut_lines:
            head = (f"[… {self.cut_lines} earlier line(s), {self.cut_bytes:,} bytes, cut: "
                    f"the last {self.limit:,} bytes are kept]")
            body = head + ("\n" + body if body else "")
        return body


class Captured:
    """What `capture()` yields: the text so far (and, after the block, all of it)."""

    def __init__(self, collector: _Collector):
        self._collector = collector

    def text(self) -> str:
        return self._collector.text()


@contextmanager
def capture(secrets: Iterable[str] = (), limit_bytes: int = LIMIT_BYTES) -> Iterator[Captured]:
    collector = _Collector(_Formatter(secrets), limit_bytes)
    root, own = logging.getLogger(), logging.getLogger(OWN_LOGGER)
    level = own.level
    if own.getEffectiveLevel() > logging.INFO:  # a quiet process (a CLI --local run) still records INFO
        own.setLevel(logging.INFO)
    root.addHandler(collector)
    try:
        # Entering resets the "already shown" registries (a library's warning is seen once per run, not
        # once per worker process) and leaving restores showwarning; the filters stay the process's own.
        with warnings.catch_warnings():
            warnings.showwarning = _log_warning
            yield Captured(collector)
    finally:
        root.removeHandler(collector)
        own.setLevel(level)


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    # As logging.captureWarnings does, without switching it on for the whole process.
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    logging.getLogger("py.warnings").warning("%s", text)


def store(session: Session, run_id: str, text: str) -> bool:
    """Write the run's log lines; False if there is no such run."""
    done = session.execute(sa.update(TrainingRun).where(TrainingRun.run_id == run_id).values(logs=text)
                           .execution_options(synchronize_session=False))
    return done.rowcount == 1


def run_of_task(session: Session, task_id: str | None, attempt: int) -> str | None:
    """The run a task's attempt started, when its result does not say (a time limit, a crash)."""
    if task_id is None:
        return None
    return session.scalar(sa.select(TrainingRun.run_id).where(TrainingRun.celery_task_id == task_id,
                                                              TrainingRun.attempt == attempt)
                          .order_by(TrainingRun.started_at.desc()).limit(1))
