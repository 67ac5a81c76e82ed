"""Fixtures for the task integration tests: migrated databases and Celery apps for a test's settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from celery import Celery

from retrainer.config import Settings
from retrainer.db.migrate import upgrade


@pytest.fixture
def sqlite_db(sqlite_url: str) -> str:
    """A fresh, migrated SQLite file."""
    upgrade(sqlite_url)
    return sqlite_url


@pytest.fixture
def make_celery() -> Iterator[Callable[[Settings], Celery]]:
    """`make_celery(settings)`: an app bound to the test's broker and result backend (closed afterwards).
    The module-level tasks.app is configured from this process's environment, not the test's broker."""
    from retrainer.tasks.app import make_app

    made: list[Celery] = []

    def make(settings: Settings) -> Celery:
        app = make_app(settings)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()
