"""What every task shares: one DB session per task, engines made per worker process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Task
from celery.signals import task_prerun, worker_process_init, worker_process_shutdown
from sqlalchemy.orm import Session

from retrainer.config import get_settings
from retrainer.config.watch import ConfigWatch
from retrainer.db import TRANSIENT_ERRORS, dispose_engines, session_scope


class RetrainerTask(Task):
    abstract = True
    # The one transient failure every task shares: the database went away or (SQLite) stayed
    # locked. Retried with exponential backoff and jitter (full jitter: 0..2^n s, capped at 300 s),
    # ten times: about ten minutes of outage on average; anything else fails at once.
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True
    max_retries = 10

    @contextmanager
    def session(self) -> Iterator[Session]:
        """The one session of this task run: commits on success, rolls back on error, always closes."""
        with session_scope(get_settings().database_url) as session:
            yield session


@worker_process_init.connect
def _init_process(**_: object) -> None:
    # A forked child must not share its parent's pooled connections; it builds its own engine on
    # first use. OpenMP reads its thread count when XGBoost first loads, here in the child.
    dispose_engines()
    os.environ.setdefault("OMP_NUM_THREADS", str(get_settings().worker_threads))


@worker_process_shutdown.connect
def _shutdown_process(**_: object) -> None:
    dispose_engines()


_watch = ConfigWatch()


@task_prerun.connect
def _follow_configuration(**_: object) -> None:
    # One stat per task: a model added to retrainer.yaml is known to the next message, no restart
    # (a change that needs one is logged as an error by the watch).
    _watch.poll()
