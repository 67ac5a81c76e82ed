"""retrainer.services.dataset: bounded load, validation, the time-ordered split and its holdout hash."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import Observation
from retrainer.demo import synthetic
from retrainer.models.base import DataError
from retrainer.services import dataset, schema, validation
from retrainer.services.dataset import LABEL, TIME
from tests.services.builders import END, START, seed


def frame_from(rows: list[synthetic.Row]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"row_id": i + 1, TIME: r.event_time, LABEL: r.label, **r.features} for i, r in enumerate(rows)]
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return frame_from(synthetic.generate(200, START, END, seed=4))


def test_split_is_time_ordered_80_20(frame: pd.DataFrame) -> None:
    shuffled = frame.sample(frac=1, random_state=0)
    train, holdout_frame, holdout = dataset.split(shuffled, 0.2)
    assert len(train) == 160 and len(holdout_frame) == 40
    assert train[TIME].max() < holdout_frame[TIME].min()
    assert holdout.rows == 40
    assert holdout.start == holdout_frame[TIME].min() and holdout.end == holdout_frame[TIME].max()
    assert set(train["row_id"]).isdisjoint(holdout_frame["row_id"])
    assert set(train["row_id"]) | set(holdout_frame["row_id"]) == set(frame["row_id"])
    assert list(holdout_frame[TIME]) == sorted(holdout_frame[TIME])


def test_split_keeps_its_share_when_rows_share_the_cutoff_timestamp() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(hours=h) for h in (0, 1, 2, 3, 4, 5, 6, 7, 7, 7)]
    f = pd.DataFrame({"row_id": range(10), TIME: times, LABEL: np.arange(10.0), "x": np.arange(10.0)})
    train, test, holdout = dataset.split(f.sample(frac=1, random_state=1), 0.2)
    # the cutoff falls inside a run of equal timestamps: they split by row id, the holdout keeps 20 %
    assert holdout.rows == 2 and len(train) == 8
    assert list(test["row_id"]) == [8, 9] and train[TIME].max() <= test[TIME].min()


def test_a_batch_sharing_one_timestamp_makes_a_20_percent_holdout() -> None:
    """3,000 events sent without occurred_at share one timestamp: the holdout is still 20 %, not 75 %."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(minutes=m) for m in range(1000)] + [t0 + timedelta(days=1)] * 3000
    f = pd.DataFrame({"row_id": range(4000), TIME: times, LABEL: np.zeros(4000), "x": np.zeros(4000)})
    train, test, holdout = dataset.split(f, 0.2)
    assert holdout.rows == 800 and len(train) == 3200
    assert dataset.split(f.sample(frac=1, random_state=2), 0.2)[2].hash == holdout.hash  # deterministic


def test_the_holdout_holds_no_row_the_champion_was_trained_on() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(hours=h) for h in range(90)] + [t0 + timedelta(hours=90)] * 10
    f = pd.DataFrame({"row_id": range(100), TIME: times, LABEL: np.zeros(100), "x": np.zeros(100)})
    # the champion was trained up to row 94 (hour 90, sharing its timestamp with rows 95..99)
    train, test, holdout = dataset.split(f, 0.2, after=(t0 + timedelta(hours=90), 94))
    assert list(test["row_id"]) == [95, 96, 97, 98, 99] and holdout.rows == 5 and len(train) == 95
    # without its last row id (a version from before it was recorded): after every row of that time
    with pytest.raises(DataError, match="no row is newer"):
        dataset.split(f, 0.2, after=(t0 + timedelta(hours=90), None))
    # a champion trained on older rows does not shrink the holdout below its share
    assert dataset.split(f, 0.2, after=(t0 + timedelta(hours=10), 10))[2].rows == 20


def test_split_refuses_impossible_data() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    same = pd.DataFrame({"row_id": range(5), TIME: [t0] * 5, LABEL: np.ones(5), "x": np.ones(5)})
    assert dataset.split(same, 0.2)[2].rows == 1  # one timestamp: split by row id
    with pytest.raises(DataError):
        dataset.split(same.iloc[:1], 0.2)


def test_holdout_hash_stable_and_label_sensitive(frame: pd.DataFrame) -> None:
    _, _, first = dataset.split(frame, 0.2)
    _, _, again = dataset.split(frame.sample(frac=1, random_state=3), 0.2)
    assert first.hash == again.hash and len(first.hash) == 64
    changed = frame.copy()
    changed.loc[changed.index[-1], LABEL] += 0.001  # a holdout label
    assert dataset.split(changed, 0.2)[2].hash != first.hash
    train_changed = frame.copy()
    train_changed.loc[train_changed.index[0], LABEL] += 0.001  # a training label: the holdout is the same
    assert dataset.split(train_changed, 0.2)[2].hash == first.hash


def test_validate_drops_and_counts_non_finite_rows(frame: pd.DataFrame) -> None:
    bad = frame.copy()
    bad.loc[3, "hook_strength"] = np.nan
    bad.loc[5, LABEL] = np.inf
    bad["video_length_s"] = bad["video_length_s"].astype(object)
    bad.loc[7, "video_length_s"] = "not a number"
    bad["segment"] = "question"  # a text column: a categorical feature
    v = dataset.validate(bad, None)
    assert v.dropped == 3
    assert v.problems == {"hook_strength": 1, LABEL: 1, "video_length_s": 1}  # the text in a numeric column
    assert len(v.frame) == 197
    assert set(v.frame["row_id"]) == set(frame["row_id"]) - {4, 6, 8}  # row_id = index + 1
    assert isinstance(v.frame["segment"].dtype, pd.CategoricalDtype)
    assert np.isfinite(v.frame.drop(columns=["row_id", TIME, "segment"]).to_numpy(dtype=float)).all()


def test_validate_with_configured_features(frame: pd.DataFrame) -> None:
    v = dataset.validate(frame, ["hook_strength", "thumbnail_score"])
    assert list(v.frame.columns) == ["row_id", TIME, LABEL, "hook_strength", "thumbnail_score"]
    with pytest.raises(DataError, match="no_such_feature"):
        dataset.validate(frame, ["hook_strength", "no_such_feature"])


def test_load_caps_at_max_rows_newest_oldest_first(session: Session) -> None:
    rows = seed(session, n=120)
    # another model's rows never mix in
    seed(session, n=30, model="roas", prefix="roas")
    loaded = dataset.load(session, "ctr", max_rows=50)
    assert len(loaded) == 50
    newest = rows[-50:]
    assert list(loaded[TIME]) == [r.event_time for r in newest]
    assert list(loaded[LABEL]) == pytest.approx([r.label for r in newest])
    assert loaded[TIME].iloc[0].tzinfo is not None
    assert {"row_id", TIME, LABEL, *rows[0].features} == set(loaded.columns)
    assert len(dataset.load(session, "ctr", max_rows=10_000)) == 120


def test_load_empty_table(session: Session) -> None:
    loaded = dataset.load(session, "ctr", 100)
    assert len(loaded) == 0
    assert list(loaded.columns) == ["row_id", TIME, LABEL]
    assert len(dataset.validate(loaded, None).frame) == 0


def test_load_then_validate_handles_missing_and_null_features(session: Session) -> None:
    rows = seed(session, n=60)
    t = rows[-1].event_time
    session.add_all([
        Observation(model="ctr", event_id="gap", features={"hook_strength": 0.5}, label=0.03,
                    event_time=t + timedelta(minutes=1), source="test"),
        Observation(model="ctr", event_id="null", features={**rows[0].features, "thumbnail_score": None}, label=0.03,
                    event_time=t + timedelta(minutes=2), source="test"),
        Observation(model="ctr", event_id="inf", features=rows[0].features, label=math.inf,
                    event_time=t + timedelta(minutes=3), source="test"),
    ])
    session.flush()
    v = dataset.validate(dataset.load(session, "ctr", 1000), None)
    assert v.dropped == 3
    assert len(v.frame) == 60
    assert v.problems[LABEL] == 1 and v.problems["thumbnail_score"] == 2


def test_features_are_every_column_but_the_id_the_time_and_the_label() -> None:
    f = pd.DataFrame({"row_id": [1], TIME: [START], LABEL: [0.1], "x": [1.0]})
    assert list(dataset.features(f).columns) == ["x"]


# --- rows already in the database that no event could bring in today -----------------------------------

def insert_raw(session: Session, rows: list[tuple[str, str, str, str]]) -> None:
    """Rows written by a direct SQL INSERT, as (event_id, features JSON, label SQL, event_time text)."""
    for event_id, features, label, event_time in rows:
        session.execute(sa.text(
            "INSERT INTO observations (model, event_id, features, label, event_time, source, created_at) "
            f"VALUES ('ctr', :event_id, :features, {label}, :event_time, 'sql', :created)"
        ), {"event_id": event_id, "features": features, "event_time": event_time, "created": "2024-03-01 00:00:00"})
    session.flush()


def extreme_rows(dialect: str, features: dict[str, float]) -> tuple[list[tuple[str, str, str, str]], dict[str, int]]:
    """Rows step 1 accepted (or a direct INSERT wrote) that broke every later retrain, and the problems
    they must be counted as."""
    ok = json.dumps(features)
    t = "2024-02-01 12:00:00"
    inf = "'Infinity'" if dialect == "postgresql" else "9e999"
    rows = [
        ("year-10000", ok, "0.03", "9999-12-31T23:00:00-05:00" if dialect == "postgresql" else "10000-01-01 04:00:00.000000"),
        ("before-1970", ok, "0.03", "1900-01-01 00:00:00"),
        ("far-future", ok, "0.03", "2999-01-01 00:00:00"),
        ("huge-label", ok, "1.7e308", t),
        ("inf-label", ok, inf, t),
        ("huge-int-feature", ok.replace('"hook_strength": ', '"hook_strength": 1' + "0" * 400 + ", \"_\": "), "0.03", t),
        ("huge-float-feature", json.dumps(features | {"hook_strength": 1e300}), "0.03", t),
        ("5000-digit-feature", ok.replace('"hook_strength": ', '"hook_strength": 9' + "9" * 4999 + ", \"_\": "), "0.03", t),
        ("not-an-object", "[1, 2]", "0.03", t),
    ]
    problems = {"event_time": 3, LABEL: 2, "hook_strength": 2, "features": 2}
    if dialect == "sqlite":  # SQLite keeps whatever it is given
        rows += [("garbage-time", ok, "0.03", "not a time"), ("text-label", ok, "'abc'", t),
                 ("not-json", "{broken", "0.03", t), ("number-time", ok, "0.03", "2460000")]
        problems |= {"event_time": 5, LABEL: 3, "features": 3}
    return rows, problems


def test_extreme_rows_already_stored_are_dropped_and_counted(session: Session) -> None:
    good = seed(session, n=100)
    rows, problems = extreme_rows(session.get_bind().dialect.name, good[0].features)
    insert_raw(session, rows)
    with clock.frozen(datetime(2024, 6, 1, tzinfo=UTC)):
        loaded = dataset.load(session, "ctr", 10_000)
    v = dataset.validate(loaded, None)
    assert (len(v.frame), v.dropped, v.problems) == (100, len(rows), problems)
    assert "_" not in v.frame.columns  # a key only the poison rows had is not a feature
    assert np.isfinite(v.frame.drop(columns=["row_id", TIME]).to_numpy(dtype=float)).all()
    assert set(v.frame["row_id"]).isdisjoint(set(loaded["row_id"]) - set(v.frame["row_id"]))


def test_the_newest_rows_are_the_newest_inside_the_window(session: Session) -> None:
    """A row dated in the future does not take a place among the newest max_rows."""
    good = seed(session, n=60)
    insert_raw(session, [("future", json.dumps(good[0].features), "0.03", "2999-01-01 00:00:00")])
    loaded = dataset.load(session, "ctr", max_rows=50)
    assert list(loaded[TIME]) == [r.event_time for r in good[-50:]]
    assert loaded.attrs["problems"] == {"event_time": 1}


def test_validate_keeps_values_at_the_limit_and_drops_beyond(frame: pd.DataFrame) -> None:
    edge = frame.copy()
    edge.loc[0, "hook_strength"] = validation.MAX_ABS
    edge.loc[1, "hook_strength"] = -validation.MAX_ABS
    edge.loc[2, "hook_strength"] = np.nextafter(validation.MAX_ABS, np.inf)
    edge.loc[3, LABEL] = -1.7e308
    edge["audience_size_log"] = edge["audience_size_log"].astype(object)
    edge.loc[4, "audience_size_log"] = 10**400  # an object column with an int no float can hold
    v = dataset.validate(edge, None)
    assert v.problems == {"hook_strength": 1, LABEL: 1, "audience_size_log": 1}
    assert v.dropped == 3 and len(v.frame) == 197


# --- typed features: categorical and boolean columns, time-only families, keys the schema lacks -----------

def typed_rows(session: Session, n: int = 90) -> None:
    session.add_all([
        Observation(model="churn", event_id=f"t-{i}", features={"plan": ("basic", "pro", "team")[i % 3],
                    "trial": i % 2 == 0, "spend": float(i)} | ({"region": "eu"} if i >= n - 3 else {}),
                    label=float(i % 2), event_time=START + timedelta(hours=i), source="test")
        for i in range(n)
    ])
    session.flush()


def test_validate_keeps_categorical_and_boolean_columns_typed(session: Session) -> None:
    typed_rows(session)
    v = dataset.validate(dataset.load(session, "churn", 1000), None)
    assert len(v.frame) == 90 and v.dropped == 0
    X = dataset.features(v.frame)
    assert isinstance(X["plan"].dtype, pd.CategoricalDtype)
    assert list(X["plan"].cat.categories) == ["basic", "pro", "team"]
    assert X["trial"].dtype == bool and X["spend"].dtype == np.float64
    # a key in 3 of 90 rows is left out with the reason, and counted, never silently ignored
    assert "region" not in X.columns and "3% of rows" in v.schema.left_out["region"]
    assert v.unused == {"region": 3}
    assert v.unused_note() == "new feature(s) seen, not used: region; add them to `features` to use them"
    # split keeps the types
    train, holdout, _ = dataset.split(v.frame, 0.2)
    assert isinstance(dataset.features(holdout)["plan"].dtype, pd.CategoricalDtype)
    assert dataset.features(train)["trial"].dtype == bool


def test_validate_reads_rows_through_a_given_schema_and_drops_wrong_types(session: Session) -> None:
    typed_rows(session)
    session.add(Observation(model="churn", event_id="odd", features={"plan": 3, "trial": "yes", "spend": 1.0},
                            label=1.0, event_time=START + timedelta(days=10), source="test"))
    session.flush()
    loaded = dataset.load(session, "churn", 1000)
    used = schema.from_config({"plan": "categorical", "trial": "boolean"}, loaded)
    v = dataset.validate(loaded, used)
    assert list(dataset.features(v.frame).columns) == ["plan", "trial"]
    assert v.dropped == 1 and v.problems == {"plan": 1, "trial": 1}
    assert v.unused == {"spend": 91, "region": 3}


def test_zero_features_only_for_a_family_that_reads_the_time() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    f = pd.DataFrame({"row_id": range(5), TIME: [t0 + timedelta(hours=h) for h in range(5)], LABEL: np.ones(5)})
    assert list(dataset.validate(f, None, needs_time=True).frame.columns) == ["row_id", TIME, LABEL]
    with pytest.raises(DataError, match="no usable feature"):
        dataset.validate(f, None)


def test_holdout_hash_is_over_the_ids_and_labels_bytes() -> None:
    """Version 2 of the holdout hash: sha256 of b"holdout-v2", the int64 ids and the float64 labels."""
    import hashlib

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    labels = np.array([0.5, -0.0, 1e-300, 0.1 + 0.2, 7.0, 1e15])
    f = pd.DataFrame({"row_id": np.arange(6) + 10**12, TIME: [t0 + timedelta(minutes=i) for i in range(6)], LABEL: labels})
    _, test, holdout = dataset.split(f, 0.5)
    expected = hashlib.sha256(b"holdout-v2" + np.arange(3, 6, dtype="<i8").__add__(10**12).tobytes()
                              + labels[3:].astype("<f8").tobytes()).hexdigest()
    assert holdout.hash == expected and list(test["row_id"]) == [10**12 + 3, 10**12 + 4, 10**12 + 5]
