"""retrainer.services.sources: a read-only SQL query as a model's training rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from retrainer.config import ConfigError, Settings, load_settings
from retrainer.db import session_scope
from retrainer.db.records import TrainingRun
from retrainer.demo.processes import write_config
from retrainer.services import retrain
from tests.services.builders import START
from tests.support import make_settings, model_config

QUERY = "SELECT id, ts, plan, spend, trial, churned FROM accounts WHERE plan IS NOT NULL"
SOURCE = {"query": QUERY, "label": "churned", "time": "ts", "id": "id"}


def user_table(url: str, n: int = 200) -> None:
    """The user's own table: a text column, a number, a boolean, a 0/1 label."""
    rng = np.random.default_rng(3)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (id INTEGER PRIMARY KEY, ts TIMESTAMP, plan TEXT, "
                             "spend NUMERIC(10, 2), trial BOOLEAN, churned REAL)"))
        conn.execute(sa.text("INSERT INTO accounts VALUES (:id, :ts, :plan, :spend, :trial, :churned)"), [
            {"id": i, "ts": START + timedelta(hours=i), "plan": ("basic", "pro", "team")[i % 3],
             "spend": round(float(rng.uniform(0, 100)), 2), "trial": bool(i % 2), "churned": float(i % 3 == 0)}
            for i in range(n)])
        conn.execute(sa.text("INSERT INTO accounts VALUES (9999, :ts, 'pro', 1, true, 1.0)"),
                     {"ts": START.replace(year=2999)})  # dated in the future: outside the window
    engine.dispose()


def with_source(settings: Settings, tmp_path: Path, **source: Any) -> Settings:
    cfg = model_config(family="classifier", training={"source": SOURCE | source})
    return make_settings(tmp_path, settings.database_url, models={"churn": cfg})


def the_run(settings: Settings, run_id: str) -> TrainingRun:
    with session_scope(settings.database_url) as session:
        run = session.get(TrainingRun, run_id)
        session.expunge(run)
        return run


def test_a_query_on_retrainers_own_database_trains_a_model(settings: Settings, tmp_path: Path) -> None:
    user_table(settings.database_url)
    s = with_source(settings, tmp_path)
    with session_scope(s.database_url) as session:
        result = retrain.retrain(session, s, "churn")
    assert result["status"] == "retrained", result
    assert result["samples"] + result["holdout"]["rows"] == 200  # the future row is outside the window
    run = the_run(s, result["run_id"])
    assert run.source == "query" and run.dataset_size == 200
    with session_scope(s.database_url) as session:
        version = session.scalar(sa.text("SELECT feature_schema FROM model_versions WHERE model = 'churn'"))
    types = {f["name"]: f["type"] for f in (version if isinstance(version, dict) else json.loads(version))["features"]}
    sqlite = settings.database_url.startswith("sqlite")  # SQLite has no boolean type: its 0 and 1 are numbers
    assert types == {"plan": "categorical", "spend": "numeric", "trial": "numeric" if sqlite else "boolean"}


def test_a_query_on_another_database(settings: Settings, tmp_path: Path) -> None:
    if settings.database_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'users.db'}"
    else:  # the same server, a URL of its own with a password (trust auth ignores it)
        other = settings.database_url.replace("postgres@", "postgres:s3cret-pw@")
    user_table(other)
    s = with_source(settings, tmp_path, database_url=other)
    with session_scope(s.database_url) as session:
        result = retrain.retrain(session, s, "churn")
    assert result["status"] == "retrained", result
    assert "s3cret" not in repr(s.model("churn"))


def test_a_failing_query_is_one_line_naming_the_model_never_the_password(settings: Settings, tmp_path: Path) -> None:
    if settings.database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        url = settings.database_url.replace("postgres@", "postgres:s3cret-pw@")
    s = with_source(settings, tmp_path, database_url=url, query="SELECT * FROM no_such_table")
    with session_scope(s.database_url) as session:
        result = retrain.retrain(session, s, "churn")
    assert result["status"] == "error"
    message = result["message"]
    assert "\n" not in message and "'churn'" in message and "no_such_table" in message
    assert "s3cret" not in message
    if url.startswith("postgresql"):
        assert "postgres:***@" in message
    run = the_run(s, result["run_id"])
    assert run.source == "query" and "s3cret" not in (run.error_message or "")


def test_the_query_runs_read_only(settings: Settings, tmp_path: Path) -> None:
    user_table(settings.database_url)
    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("CREATE SEQUENCE seq"))
            query = "SELECT id, ts, plan, churned, nextval('seq') AS n FROM accounts"
        else:  # SQLite has no writing function; a trigger-free write needs a statement the wrap refuses
            query = "SELECT id, ts, plan, churned FROM accounts; DELETE FROM accounts"
    engine.dispose()
    s = with_source(settings, tmp_path, query=query)
    with session_scope(s.database_url) as session:
        result = retrain.retrain(session, s, "churn")
    assert result["status"] == "error", result
    with session_scope(s.database_url) as session:
        assert session.scalar(sa.text("SELECT count(*) FROM accounts")) == 201


def test_column_errors_name_the_column(settings: Settings, tmp_path: Path) -> None:
    user_table(settings.database_url)
    s = with_source(settings, tmp_path, label="no_label")
    with session_scope(s.database_url) as session:
        result = retrain.retrain(session, s, "churn")
    assert result["status"] == "error" and "no column 'no_label'" in result["message"]


@pytest.mark.parametrize(("source", "expected"), [
    ({"query": "  ", "label": "y", "time": "t"}, "training.source.query: must not be empty"),
    ({"query": "SELECT 1", "time": "t"}, "training.source.label: Field required"),
    ({"query": "SELECT 1", "label": "y", "time": "y"}, "label, time and id must name different columns"),
    ({"query": "SELECT 1", "label": "y", "time": "t", "database_url": "mysql://u:s3cret-pw@h/db"},
     "unsupported URL scheme"),
])
def test_the_source_is_checked_when_the_configuration_loads(tmp_path: Path, source: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", models={"m": model_config(training={"source": source})})
    assert expected in str(caught.value) and "s3cret" not in str(caught.value)
    assert "models.m." in str(caught.value)


def test_observations_is_the_default_source(tmp_path: Path) -> None:
    s = make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}",
                      models={"m": model_config(training={"source": "observations"})})
    assert s.model("m").training.source is None


def test_a_child_process_config_keeps_the_query_database_url(tmp_path: Path) -> None:
    """write_config (a worker's retrainer.yaml) writes the secret itself, not pydantic's mask."""
    url = "postgresql+psycopg://reader:s3cret-pw@db:5432/crm"
    s = make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}",
                      models={"m": model_config(training={"source": SOURCE | {"database_url": url}})})
    data = yaml.safe_load(write_config(s, tmp_path / "child.yaml").read_text())
    again = load_settings(**data)
    assert again.model("m").training.source.database_url.get_secret_value() == url
