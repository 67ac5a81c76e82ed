"""Log lines carry the running task's model and id, and nothing leaks into the next task."""

from __future__ import annotations

import logging

from celery.signals import task_postrun, task_prerun

import retrainer.tasks.logcontext  # noqa: F401  (installs the record factory and the signal handlers)
from retrainer.tasks.logcontext import LOG_FORMAT


def line(message: str) -> str:
    record = logging.getLogger("retrainer.test").makeRecord("retrainer.test", logging.INFO, __file__, 1, message,
                                                           None, None)
    return logging.Formatter(LOG_FORMAT).format(record)


def test_context_is_bound_for_a_task_and_cleared_after_it() -> None:
    assert line("idle").endswith("] idle")
    task_prerun.send(sender=None, task_id="0123456789abcdef", task=None, args=(), kwargs={"model": "ctr"})
    assert line("working").endswith("] [ctr 01234567] working")
    task_postrun.send(sender=None, task_id="0123456789abcdef", task=None, args=(), kwargs={"model": "ctr"})
    assert line("after").endswith("] after")
    task_prerun.send(sender=None, task_id="fedcba9876543210", task=None, args=("run_1",), kwargs={})
    assert line("no model").endswith("] [fedcba98] no model")
    task_postrun.send(sender=None, task_id="fedcba9876543210", task=None, args=(), kwargs={})
