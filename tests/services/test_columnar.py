"""retrainer.services.columnar: the column-by-column load on PostgreSQL reads what the JSON path reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import Observation
from retrainer.services import dataset, schema
from retrainer.services.dataset import LABEL, TIME
from tests.services.builders import START, seed
from tests.services.test_dataset import extreme_rows, insert_raw, typed_rows


@pytest.fixture
def db_url(pg_url: str) -> str:
    """PostgreSQL only (this module's `settings` and `session` too): the columnar load is PostgreSQL's; SQLite reads JSON (tested in test_dataset.py)."""
    return pg_url


@pytest.fixture
def pg(session: Session) -> Session:
    return session


def both(session: Session, model: str, used: schema.FeatureSchema, max_rows: int = 10_000) -> tuple[
        dataset.Validated, dataset.Validated]:
    """The rows validated through `used` after the JSON load and after the columnar load."""
    json_path = dataset.validate(dataset.load(session, model, max_rows), used)
    columnar = dataset.validate(dataset.load(session, model, max_rows, used), used)
    return json_path, columnar


def assert_same(a: dataset.Validated, b: dataset.Validated) -> None:
    pd.testing.assert_frame_equal(a.frame, b.frame, check_dtype=True, check_categorical=True)
    assert (a.dropped, a.problems, a.unused) == (b.dropped, b.problems, b.unused)


def test_the_same_frame_as_the_json_path(pg: Session) -> None:
    seed(pg, n=300)
    used = schema.infer(dataset.load(pg, "ctr", 10_000))
    a, b = both(pg, "ctr", used)
    assert_same(a, b)
    assert len(b.frame) == 300 and b.frame[TIME].iloc[0].tzinfo is not None
    # capped at the newest rows, oldest first
    capped = dataset.load(pg, "ctr", 50, used)
    assert list(capped["row_id"]) == list(dataset.load(pg, "ctr", 50)["row_id"])


def odd_typed_rows(pg: Session) -> schema.FeatureSchema:
    """typed_rows plus rows a real export carries (wrong types, nulls, quotes, a nested value), and the
    schema they are read through."""
    typed_rows(pg)
    pg.add_all([
        Observation(model="churn", event_id="odd", features={"plan": 3, "trial": "yes", "spend": "1.0"},
                    label=1.0, event_time=START + timedelta(days=10), source="test"),
        Observation(model="churn", event_id="nulls", features={"plan": None, "trial": None, "spend": None, "x": None},
                    label=1.0, event_time=START + timedelta(days=11), source="test"),
        Observation(model="churn", event_id="odd-text", features={"plan": "a \"quoted\", \\N\nline é", "trial": True,
                    "spend": 2.5, "nested": {"a": [1, 2]}}, label=0.0, event_time=START + timedelta(days=12), source="test"),
    ])
    pg.flush()
    used = schema.FeatureSchema((schema.Feature("plan", schema.FeatureType.CATEGORICAL),
                                 schema.Feature("trial", schema.FeatureType.BOOLEAN),
                                 schema.Feature("spend", schema.FeatureType.NUMERIC)))
    return used


def test_typed_features_wrong_types_and_unused_keys(pg: Session) -> None:
    used = odd_typed_rows(pg)
    a, b = both(pg, "churn", used)
    assert_same(a, b)
    assert b.problems == {"plan": 2, "trial": 2, "spend": 2}
    assert b.unused == {"region": 3, "nested": 1}
    assert "a \"quoted\", \\N\nline é" in set(b.frame["plan"])


def test_poison_rows_are_dropped_and_counted(pg: Session) -> None:
    good = seed(pg, n=100)
    rows, problems = extreme_rows("postgresql", good[0].features)
    insert_raw(pg, rows + [("tiny", json.dumps(good[0].features | {"hook_strength": 1e-400}), "0.03", "2024-02-01 12:00:00")])
    with clock.frozen(datetime(2024, 6, 1, tzinfo=UTC)):
        used = schema.infer(dataset.load(pg, "ctr", 10_000))
        a, b = both(pg, "ctr", used)
    # The one difference: Python's json.loads refuses an integer of 5,000 digits (the whole row is
    # undecodable), the columnar load finds it out of range for its feature. Dropped either way.
    assert a.problems == problems
    assert b.problems == problems | {"hook_strength": problems["hook_strength"] + 1, "features": problems["features"] - 1}
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.dropped == b.dropped == len(rows)
    assert b.frame.loc[b.frame["row_id"] == b.frame["row_id"].max(), "hook_strength"].item() == 0.0  # 1e-400
    assert np.isfinite(b.frame.drop(columns=["row_id", TIME]).to_numpy(dtype=float)).all()


def test_a_configured_feature_no_row_carries_is_named(pg: Session) -> None:
    seed(pg, n=60)
    used = schema.known({"hook_strength": "numeric", "missing_key": "numeric"}, None)
    loaded = dataset.load(pg, "ctr", 1000, used)
    assert "missing_key" not in loaded.columns
    with pytest.raises(Exception, match="missing_key"):
        schema.resolve(loaded, {"hook_strength": "numeric", "missing_key": "numeric"}, None)


def test_empty_and_label_edges(pg: Session) -> None:
    used = schema.known({"hook_strength": "numeric"}, None)
    empty = dataset.load(pg, "ctr", 100, used)
    assert len(empty) == 0 and list(empty.columns) == ["row_id", TIME, LABEL]
    good = seed(pg, n=60)
    insert_raw(pg, [("inf", json.dumps(good[0].features), "'Infinity'", "2024-02-01 12:00:00"),
                    ("nan", json.dumps(good[0].features), "'NaN'", "2024-02-01 12:00:01")])
    a, b = both(pg, "ctr", used)
    assert_same(a, b)
    assert b.problems == {LABEL: 2}


def test_known_schema() -> None:
    prod = schema.FeatureSchema((schema.Feature("a", schema.FeatureType.NUMERIC),
                                 schema.Feature("b", schema.FeatureType.CATEGORICAL, ("x",))))
    assert schema.known(None, None) is None
    assert schema.known(None, prod).names == ["a", "b"]
    assert schema.known(["b"], prod).features == (prod.features[1],)
    assert schema.known(["b", "c"], prod) is None  # c's type comes from the rows
    assert schema.known({"c": "boolean"}, None).type_of("c") is schema.FeatureType.BOOLEAN


def test_feature_names_are_sql_literals(pg: Session) -> None:
    odd = {"o'clock": 1.5, 'say "hi"': "yes", "naïve \\ key": True, "x": 1.0}
    pg.add_all([Observation(model="odd", event_id=f"o-{i}", features=odd | {"x": float(i)}, label=float(i),
                            event_time=START + timedelta(hours=i), source="test") for i in range(20)])
    pg.flush()
    used = schema.infer(dataset.load(pg, "odd", 100))
    assert set(used.names) == set(odd)
    a, b = both(pg, "odd", used)
    assert_same(a, b)
