"""retrainer.services.ingest: a user's own CSV into observations, on SQLite and the real PostgreSQL,
then retrained in-process with its categorical and boolean columns used."""

from __future__ import annotations

import builtins
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from retrainer.config import Settings, UnknownModel
from retrainer.db import session_scope
from retrainer.db.records import ModelVersion, Observation, RetrainRequest
from retrainer.services import ingest, retrain
from retrainer.services.ingest import IngestError
from tests.services.builders import churn_csv, count
from tests.support import make_settings, model_config

START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    timing = model_config(family="timing") | {"params": {"uncertainty_samples": 50}}
    return make_settings(tmp_path, db_url, models={"churn": model_config(family="classifier"), "timing": timing})


def run_ingest(settings: Settings, path: Path, model: str = "churn", **kwargs: Any) -> ingest.Report:
    kwargs = {"label": "churned", "time": "at", "id_column": "customer"} | kwargs
    with session_scope(settings.database_url) as s:
        return ingest.ingest(s, settings, model, path, **kwargs)


def version(settings: Settings, version_id: str) -> ModelVersion:
    with session_scope(settings.database_url) as s:
        found = s.get(ModelVersion, version_id)
        assert found is not None
        s.expunge(found)
        return found


def test_a_csv_with_categorical_and_boolean_columns_is_ingested_once_and_trains_a_classifier(
        settings: Settings, tmp_path: Path) -> None:
    path = churn_csv(tmp_path / "churn.csv", n=240, start=START)
    first = run_ingest(settings, path, chunk_rows=100)
    assert (first.rows, first.stored, first.duplicates, first.rejected_count) == (240, 240, 0, 0)
    again = run_ingest(settings, path)
    assert (again.stored, again.duplicates, again.rejected_count) == (0, 240, 0)  # idempotent
    with session_scope(settings.database_url) as s:
        stored = s.scalar(sa.select(Observation).where(Observation.event_id == "c1"))
        assert stored is not None and stored.source == "ingest"
        assert stored.features["plan"] == "pro" and isinstance(stored.features["trial"], bool)
        assert isinstance(stored.features["spend"], float) and "customer" not in stored.features

    with session_scope(settings.database_url) as s:
        result = retrain.retrain(s, settings, "churn")
    assert result["status"] == "retrained", result
    recorded = version(settings, result["version_id"]).feature_schema
    assert recorded is not None and recorded["source"] == "inferred"
    types = {f["name"]: f for f in recorded["features"]}
    assert types["plan"] == {"name": "plan", "type": "categorical", "categories": ["basic", "pro", "team"]}
    assert types["trial"] == {"name": "trial", "type": "boolean"}
    assert types["spend"]["type"] == "numeric" and 5 <= types["spend"]["range"][0] <= types["spend"]["range"][1] <= 100
    assert result["unused_features"] == {}


def test_rows_that_do_not_fit_the_production_schema_are_rejected_by_line(settings: Settings, tmp_path: Path) -> None:
    run_ingest(settings, churn_csv(tmp_path / "churn.csv", n=240, start=START))
    with session_scope(settings.database_url) as s:
        assert retrain.retrain(s, settings, "churn")["status"] == "retrained"
    later = (START + timedelta(days=12)).isoformat()
    bad = tmp_path / "bad.csv"
    bad.write_text("customer,plan,spend,trial,churned,at,region\n"
                   f"n1,pro,10.5,true,0,{later},eu\n"
                   f"n2,pro,abc,true,0,{later},eu\n"  # line 3: text where the schema has a number
                   f"n3,,10,false,1,{later},eu\n"  # line 4: no plan
                   f"n4,team,7,maybe,1,{later},eu\n"  # line 5: not a boolean
                   f"n5,basic,8,false,x,{later},eu\n")  # line 6: the label is no number
    report = run_ingest(settings, bad)
    assert (report.stored, report.rejected_count) == (1, 4)
    assert report.rejected == [
        (3, "features.spend: expected a number (numeric), got string"),
        (4, "features.plan: missing (the production schema needs it)"),
        (5, "features.trial: expected a boolean (boolean), got string"),
        (6, "churned (label): expected a number, got string"),
    ]
    # a new key is stored, and a retrain names it instead of ignoring it silently
    run_ingest(settings, churn_csv(tmp_path / "more.csv", n=60, start=START + timedelta(days=13), seed=9))
    with session_scope(settings.database_url) as s:
        result = retrain.retrain(s, settings, "churn")
    assert result["unused_features"] == {"region": 1}
    assert "new feature(s) seen, not used: region; add them to `features` to use them" in result["reason"]


def test_identical_lines_without_an_id_are_stored_once(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "dups.csv"
    path.write_text("plan,trial,churned\npro,true,1\npro,true,1\nbasic,false,0\n")
    report = run_ingest(settings, path, time=None, id_column=None)
    assert (report.rows, report.stored, report.duplicates) == (3, 2, 1)
    assert run_ingest(settings, path, time=None, id_column=None).stored == 0


def test_one_retrain_request_per_file_or_none(settings: Settings, tmp_path: Path) -> None:
    report = run_ingest(settings, churn_csv(tmp_path / "a.csv", n=120, start=START), chunk_rows=25)
    assert report.enqueue is not None
    with session_scope(settings.database_url) as s:
        [request] = s.scalars(sa.select(RetrainRequest)).all()
        assert request.event_count == 120 and request.requested_by == "ingest"
    quiet = run_ingest(settings, churn_csv(tmp_path / "b.csv", n=30, start=START, seed=8), id_column=None,
                       retrain=False)
    assert quiet.stored == 30 and quiet.enqueue is None
    with session_scope(settings.database_url) as s:
        assert count(s, RetrainRequest) == 1


def test_a_time_only_family_ingests_and_retrains_without_features(settings: Settings, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    at, lines = START, ["wait,at"]
    while at < START + timedelta(days=25):
        wait = max(0.5, 8 + 6 * math.cos(2 * math.pi * (at.hour - 20) / 24) + rng.normal(0, 1.5))
        lines.append(f"{wait:.3f},{at.isoformat()}")
        at += timedelta(hours=wait)
    path = tmp_path / "waits.csv"
    path.write_text("\n".join(lines) + "\n")
    report = run_ingest(settings, path, model="timing", label="wait", id_column=None)
    assert report.stored == len(lines) - 1 and report.rejected_count == 0
    with session_scope(settings.database_url) as s:
        result = retrain.retrain(s, settings, "timing")
    assert result["status"] == "retrained", result
    assert version(settings, result["version_id"]).feature_schema == {"features": [], "source": "inferred",
                                                                    "left_out": {}}


def test_a_feature_family_refuses_rows_without_features(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bare.csv"
    path.write_text("churned\n1\n0\n")
    report = run_ingest(settings, path, time=None, id_column=None)
    assert report.stored == 0
    assert report.rejected == [(2, "features: empty; model 'churn' needs at least one feature"),
                               (3, "features: empty; model 'churn' needs at least one feature")]


@pytest.mark.parametrize("content,kwargs,problem", [
    (None, {}, "no such file"),
    ("", {}, "the file is empty"),
    ("plan,churned\n", {"time": None, "id_column": None}, "no data rows"),
    ("plan,label\npro,1\n", {"time": None, "id_column": None},
     "no column 'churned' (--label); its columns: plan, label"),
    ("plan,churned\npro,1\n", {"id_column": None}, "no column 'at' (--time)"),
])
def test_a_file_that_cannot_be_ingested_is_one_line(settings: Settings, tmp_path: Path, content: str | None,
                                                    kwargs: dict[str, Any], problem: str) -> None:
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(IngestError, match=re.escape(problem)) as info:
        run_ingest(settings, path, **kwargs)
    assert "\n" not in str(info.value)


def test_unknown_model_and_missing_pyarrow(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = churn_csv(tmp_path / "churn.csv", n=5, start=START)
    with pytest.raises(UnknownModel):
        run_ingest(settings, path, model="nope")
    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    parquet = tmp_path / "data.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(IngestError, match=r"^reading Parquet needs the package `pyarrow`: pip install pyarrow$"):
        run_ingest(settings, parquet)


def test_parquet_keeps_its_column_types(settings: Settings, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    path = tmp_path / "data.parquet"
    pd.DataFrame({"plan": ["pro", "team"], "trial": [True, False], "spend": [1.5, 2.0], "churned": [1, 0],
                  "at": [START, START + timedelta(hours=1)]}).to_parquet(path)
    report = run_ingest(settings, path, id_column=None)
    assert report.stored == 2


def test_a_configured_schema_wins_over_the_production_one(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"churn": model_config(family="classifier")})
    run_ingest(settings, churn_csv(tmp_path / "churn.csv", n=240, start=START))
    with session_scope(settings.database_url) as s:
        assert retrain.retrain(s, settings, "churn")["status"] == "retrained"  # inferred: plan, spend, trial
    configured = settings.model_copy(update={"models": {"churn": settings.model("churn").model_copy(
        update={"features": {"plan": "categorical", "trial": "boolean"}})}})
    with session_scope(settings.database_url) as s:
        result = retrain.retrain(s, configured, "churn")
    assert result["status"] in ("retrained", "kept"), result
    recorded = version(settings, result["version_id"]).feature_schema
    assert recorded is not None and recorded["source"] == "configured"
    assert [(f["name"], f["type"]) for f in recorded["features"]] == [("plan", "categorical"), ("trial", "boolean")]
    assert result["unused_features"] == {"spend": 240}


@pytest.mark.parametrize(("content", "rows"), [("a,y\n1,0\n2,1\n", 2), ("a,y\n1,0\n2,1", 2), ("a,y\n", 0), ("", 0)])
def test_count_rows_gives_the_progress_bar_its_total(tmp_path: Path, content: str, rows: int) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content)
    assert ingest.count_rows(path) == rows
    assert ingest.count_rows(tmp_path / "absent.csv") is None
