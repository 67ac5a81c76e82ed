"""What every endpoint needs from the app it runs in: the settings it was built with, a unit of work on
their database, and a Celery app bound to their broker (made on first use, closed with the app).

The Celery app is made from these settings, not the module-level `retrainer.tasks.app` (configured from
the process environment), so an API built for a test's broker sends its messages there."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from retrainer.config import Settings
from retrainer.db import session_scope

if TYPE_CHECKING:
    from celery import Celery


class Context:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._celery: Celery | None = None
        self._lock = threading.Lock()  # sync endpoints run in a thread pool

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, so a write is durable before its response
        (and before any message that names its rows is sent)."""
        with session_scope(self.settings.database_url) as session:
            yield session

    def celery(self) -> Celery:
        with self._lock:
            if self._celery is None:
                from retrainer.tasks.app import make_app

                self._celery = make_app(self.settings, main="retrainer-api")
            return self._celery

    def close(self) -> None:
        with self._lock:
            if self._celery is not None:
                self._celery.close()
                self._celery = None


def context(request: Request) -> Context:
    return request.app.state.context


ContextDep = Annotated[Context, Depends(context)]
