"""The API through FastAPI's TestClient, on a real migrated database (SQLite and PostgreSQL through the
shared `db_url` fixture) with a bearer token configured."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from retrainer.api import create_app
from retrainer.config import Settings
from retrainer.db import session_scope
from tests.support import make_settings

TOKEN = "api-t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api_settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url, api_token=TOKEN)


@contextmanager
def client_for(settings: Settings, **options: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings, **options)) as client:  # `with`: the app's lifespan runs
        yield client


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with client_for(api_settings) as c:
        yield c


@contextmanager
def db(settings: Settings) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session
