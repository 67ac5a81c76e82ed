"""Log context: the running task's model and id on every log line, bound before a task and cleared
after it so nothing leaks into the next one. Installed when the app is imported, so the worker,
its children and beat all format lines the same way."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from celery.signals import task_postrun, task_prerun

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(log_context)s%(message)s"
_context: ContextVar[str] = ContextVar("retrainer_log_context", default="")
_make_record = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # A record factory, not a handler filter: every record has the field, whichever handler
    # (Celery adds some of its own late) formats it.
    record = _make_record(*args, **kwargs)
    record.log_context = _context.get()
    return record


logging.setLogRecordFactory(_record_with_context)


@task_prerun.connect
def _bind(task_id: str, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    model = (kwargs or {}).get("model")
    _context.set(f"[{model} {task_id[:8]}] " if model else f"[{task_id[:8]}] ")


@task_postrun.connect
def _clear(**_: Any) -> None:
    _context.set("")
