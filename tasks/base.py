"""What every task shares: one DB session per task, log context, engines made per worker process."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from celery import Task
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_process_shutdown
from sqlalchemy.orm import Session

from retrainer.config import get_settings
from retrainer.db import dispose_engines, session_scope

log_context: ContextVar[dict[str, str] | None] = ContextVar("retrainer_log_context", default=None)


class ContextFilter(logging.Filter):
    """Adds the running task's id and model to every log record (empty between tasks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = log_context.get() or {}
        record.task_id = ctx.get("task_id", "-")
        record.model = ctx.get("model", "-")
        return True


class RetrainerTask(Task):
    abstract = True

    @contextmanager
    def session(self) -> Iterator[Session]:
        """The one session of this task run: commits on success, rolls back on error, always closes."""
        with session_scope(get_settings().database_url) as session:
            yield session


@task_prerun.connect
def _bind_context(task_id: str, kwargs: dict | None = None, **_: object) -> None:
    model = (kwargs or {}).get("model", "-")
    log_context.set({"task_id": task_id, "model": str(model)})


@task_postrun.connect
def _clear_context(**_: object) -> None:
    log_context.set(None)


@worker_process_init.connect
def _init_process(**_: object) -> None:
    # A forked child must not share its parent's pooled connections; it builds its own engine on
    # first use. OpenMP reads its thread count when XGBoost first loads, here in the child.
    dispose_engines()
    os.environ.setdefault("OMP_NUM_THREADS", str(get_settings().worker_threads))
    for handler in logging.getLogger().handlers:
        handler.addFilter(ContextFilter())


@worker_process_shutdown.connect
def _shutdown_process(**_: object) -> None:
    dispose_engines()
