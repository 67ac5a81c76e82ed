"""services.dataset: bounded load, validation, the time-ordered split and its holdout hash."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from models.base import LABEL, TIME, DataError
from retrainer.db.records import Observation
from services import dataset, synthetic
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


def test_split_keeps_ties_on_the_holdout_side() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(hours=h) for h in (0, 1, 2, 3, 4, 5, 6, 7, 7, 7)]
    f = pd.DataFrame({"row_id": range(10), TIME: times, LABEL: np.arange(10.0), "x": np.arange(10.0)})
    train, test, holdout = dataset.split(f, 0.2)
    # the cutoff falls inside a run of equal timestamps: all of them go to the holdout
    assert holdout.rows == 3 and len(train) == 7
    assert train[TIME].max() < test[TIME].min()


def test_split_refuses_impossible_data() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    same = pd.DataFrame({"row_id": range(5), TIME: [t0] * 5, LABEL: np.ones(5), "x": np.ones(5)})
    with pytest.raises(DataError, match="one timestamp"):
        dataset.split(same, 0.2)
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
    bad["segment"] = "question"  # text column: not a feature
    v = dataset.validate(bad, None)
    assert v.dropped == 3
    assert v.problems == {"hook_strength": 1, LABEL: 1, "video_length_s": 1}
    assert len(v.frame) == 197
    assert set(v.frame["row_id"]) == set(frame["row_id"]) - {4, 6, 8}  # row_id = index + 1
    assert "segment" not in v.frame.columns
    assert np.isfinite(v.frame.drop(columns=["row_id", TIME]).to_numpy(dtype=float)).all()


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


def test_features_only() -> None:
    f = pd.DataFrame({"row_id": [1], TIME: [START], LABEL: [0.1], "x": [1.0]})
    assert list(dataset.features_only(f).columns) == [LABEL, "x"]
