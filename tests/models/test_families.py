"""Every installed model family honours the protocol in models.base (one conformance test)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.base import LABEL, TIME, DataError, Family, Metrics, family_class, load_family
from retrainer.config import available_families
from services import dataset, synthetic

SMALL_PARAMS: dict[str, dict[str, Any]] = {"ctr": {"n_estimators": 40, "max_depth": 3}}


def synthetic_frame(n: int = 300, seed: int = 3) -> pd.DataFrame:
    rows = synthetic.generate(n, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 31, tzinfo=UTC), seed=seed)
    return pd.DataFrame(
        [{"row_id": i, TIME: r.event_time, LABEL: r.label, **r.features} for i, r in enumerate(rows)]
    )


def small_params(family: str, **extra: Any) -> dict[str, Any]:
    return {**SMALL_PARAMS.get(family, {}), **extra}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_frame()


@pytest.mark.parametrize("family", sorted(available_families()))
def test_family_conformance(family: str, frame: pd.DataFrame, tmp_path: Path) -> None:
    cls = family_class(family)
    assert cls.name == family
    assert isinstance(cls.algorithm, str) and cls.algorithm
    assert cls.artifact_suffix.startswith(".")

    train_rows, test_rows = frame.iloc[:240], frame.iloc[240:]
    train = dataset.features_only(train_rows)
    scoring = dataset.features_only(test_rows.drop(columns=[LABEL]))
    y_true = test_rows[LABEL].to_numpy()

    # construction stores hyper-parameters only: nothing learned yet, params come back as given
    probe = load_family(family, small_params(family, random_state=11))
    assert isinstance(probe, Family)
    assert not [k for k in vars(probe) if k.endswith("_") and not k.startswith("_")], vars(probe)
    params = probe.get_params()
    for key, value in small_params(family, random_state=11).items():
        assert params[key] == value
    probe.get_params()["random_state"] = -1  # a copy: mutating it changes nothing
    assert probe.get_params()["random_state"] == 11

    # fit returns self and learns state
    first = load_family(family, small_params(family, random_state=5))
    assert first.fit(train) is first
    assert [k for k in vars(first) if k.endswith("_")]
    p1 = first.predict(scoring)
    assert isinstance(p1, np.ndarray) and p1.shape == (len(test_rows),)
    assert np.isfinite(p1).all()

    # same random_state: identical predictions
    second = load_family(family, small_params(family, random_state=5)).fit(train)
    np.testing.assert_array_equal(second.predict(scoring), p1)

    # evaluate: Metrics with the primary among its values, and it learned something
    metrics = first.evaluate(y_true, p1)
    assert isinstance(metrics, Metrics)
    assert metrics.primary in metrics.values
    assert isinstance(metrics.higher_is_better, bool)
    assert all(isinstance(v, float) for v in metrics.values.values())
    perfect = first.evaluate(y_true, y_true)
    assert perfect.improvement_pct(metrics) > 0  # a perfect prediction scores better in the family's direction

    # save -> load round trip predicts identically (the library's own format)
    path = tmp_path / f"model{cls.artifact_suffix}"
    first.save(path)
    assert path.is_file() and path.stat().st_size > 0
    loaded = cls.load(path)
    assert isinstance(loaded, cls)
    np.testing.assert_array_equal(loaded.predict(scoring), p1)
    assert loaded.get_params()["random_state"] == 5

    versions = first.library_versions()
    assert versions and all(isinstance(v, str) and v for v in versions.values())

    # a NaN feature at predict time is refused, never silently predicted
    bad = scoring.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(DataError):
        first.predict(bad)
    bad = scoring.copy()
    bad.iloc[1, 1] = np.inf
    with pytest.raises(DataError):
        first.predict(bad)


def test_ctr_missing_feature_column_names_it(frame: pd.DataFrame) -> None:
    est = load_family("ctr", small_params("ctr")).fit(dataset.features_only(frame))
    scoring = dataset.features_only(frame.drop(columns=[LABEL, "thumbnail_score"]))
    with pytest.raises(DataError, match="thumbnail_score"):
        est.predict(scoring)


def test_ctr_refuses_nan_labels_and_empty_features(frame: pd.DataFrame) -> None:
    train = dataset.features_only(frame).copy()
    train.loc[3, LABEL] = np.nan
    with pytest.raises(DataError, match="label"):
        load_family("ctr", small_params("ctr")).fit(train)
    with pytest.raises(DataError, match="no feature"):
        load_family("ctr", small_params("ctr")).fit(frame[[LABEL]])


def test_ctr_ignores_extra_columns_and_column_order(frame: pd.DataFrame) -> None:
    est = load_family("ctr", small_params("ctr")).fit(dataset.features_only(frame))
    scoring = dataset.features_only(frame.drop(columns=[LABEL]))
    expected = est.predict(scoring)
    shuffled = scoring[list(reversed(scoring.columns))].assign(unrelated=1.0)
    np.testing.assert_array_equal(est.predict(shuffled), expected)


def test_ctr_metrics_match_definitions() -> None:
    est = load_family("ctr")
    y = np.array([0.10, 0.20, 0.05, 0.40])
    p = np.array([0.11, 0.30, 0.05, 0.30])
    m = est.evaluate(y, p)
    assert m.primary == "mae" and m.higher_is_better is False
    err = p - y
    assert m.values["mae"] == pytest.approx(np.mean(np.abs(err)))
    assert m.values["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    assert m.values["r2"] == pytest.approx(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2))
    assert m.values["accuracy"] == pytest.approx(0.5)  # within ±20 %: 0.11 vs 0.10 and 0.05 vs 0.05
    assert m.values["count"] == 4


def test_improvement_pct_direction() -> None:
    lower = Metrics({"mae": 0.02}, "mae", higher_is_better=False)
    base = Metrics({"mae": 0.04}, "mae", higher_is_better=False)
    assert lower.improvement_pct(base) == pytest.approx(50.0)
    assert base.improvement_pct(lower) == pytest.approx(-100.0)
    hi = Metrics({"auc": 0.9}, "auc", higher_is_better=True)
    assert hi.improvement_pct(Metrics({"auc": 0.75}, "auc", True)) == pytest.approx(20.0)
    zero = Metrics({"mae": 0.0}, "mae", higher_is_better=False)
    assert zero.improvement_pct(zero) == 0.0
    assert base.improvement_pct(zero) == -np.inf


def test_unknown_family_lookup() -> None:
    with pytest.raises(LookupError, match="no_such"):
        family_class("no_such")
