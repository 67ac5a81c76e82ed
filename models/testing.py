"""The conformance kit: does a family honour the contract in retrainer.models.base?

    from retrainer.models.testing import check_family
    check_family(MyFamily)                      # raises AssertionError naming the broken rule
    check_family(MyFamily, params={"n_estimators": 20}, data=(X, y, time))

Like scikit-learn's `check_estimator`: a list of small, named checks, each one behaviour, run on a
small synthetic data set shaped for the family's task (or the caller's own). `family_checks(cls)`
yields them one by one, for a parametrised test.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from retrainer.models.base import DataError, Family, FeatureType, Live, Metrics, MetricSpec, Prediction, Task

LIVE_OF = {Task.REGRESSION: Live.REGRESSION, Task.BINARY: Live.CLASSIFICATION, Task.MULTICLASS: Live.CLASSIFICATION,
           Task.FORECAST: Live.FORECAST}


@dataclass(frozen=True)
class Data:
    X: pd.DataFrame
    y: pd.Series
    time: pd.Series | None

    def rows(self, start: int, stop: int) -> Data:
        return Data(self.X.iloc[start:stop], self.y.iloc[start:stop],
                    None if self.time is None else self.time.iloc[start:stop])


def synthetic_data(family: type[Family], n: int = 300, seed: int = 0, task: Task | None = None) -> Data:
    """A learnable data set for the family's task (or `task`, for a family that serves several), with
    every feature type it accepts."""
    task = task or family.task
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {"x1": rng.uniform(0, 1, n), "x2": rng.normal(0, 1, n)}
    if FeatureType.CATEGORICAL in family.feature_types:
        columns["channel"] = pd.Categorical(rng.choice(["email", "feed", "search"], n),
                                            categories=["email", "feed", "search"])
    if FeatureType.BOOLEAN in family.feature_types:
        columns["returning"] = rng.uniform(0, 1, n) < 0.3
    X = pd.DataFrame(columns)
    signal = 2.0 * X["x1"] + 0.5 * X["x2"]
    if "channel" in X:
        signal += X["channel"].cat.codes.to_numpy() * 0.3
    if "returning" in X:
        signal += X["returning"].to_numpy() * 0.4
    time = pd.Series(pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"))
    if task == Task.REGRESSION:
        y = signal + rng.normal(0, 0.05, n)
    elif task == Task.BINARY:
        y = (signal + rng.normal(0, 0.2, n) > np.median(signal)).astype(int)
    elif task == Task.MULTICLASS:
        y = np.digitize(signal + rng.normal(0, 0.1, n), np.quantile(signal, [1 / 3, 2 / 3]))
    else:  # forecast: hours until the next event, with a daily rhythm
        y = 12 + 6 * np.sin(2 * np.pi * time.dt.hour / 24) + rng.normal(0, 0.5, n)
    return Data(X, pd.Series(np.asarray(y), name="y"), time if family.needs_time or task == Task.FORECAST else None)


def family_checks(family: type[Family], params: dict[str, Any] | None = None,
                  data: tuple[pd.DataFrame, pd.Series, pd.Series | None] | None = None
                  ) -> Iterator[tuple[str, Callable[[], None]]]:
    """(name, check) pairs; each check raises AssertionError saying which rule it broke."""
    params = params or {}
    # A family serving several tasks (classifier: binary or multiclass) declares the class's default
    # and narrows it per instance from its parameters: the data follows the instance's task.
    task = family(**params).task
    full = Data(*data) if data is not None else synthetic_data(family, task=task)
    cut = int(len(full.y) * 0.8)
    train, test = full.rows(0, cut), full.rows(cut, len(full.y))

    def new(**extra: Any) -> Family:
        return family(**{**params, **extra})

    def fit(est: Family, part: Data = train, **kw: Any) -> Family:
        return est.fit(part.X, part.y, time=part.time, **kw)

    def predict(est: Family, part: Data = test) -> Prediction:
        return est.predict(part.X, time=part.time)

    def declarations() -> None:
        for attr, kind in (("name", str), ("algorithm", str), ("artifact_suffix", str), ("needs_time", bool),
                           ("can_fine_tune", bool)):
            assert isinstance(getattr(family, attr, None), kind), f"class attribute {attr} must be a {kind.__name__}"
        assert family.artifact_suffix.startswith("."), "artifact_suffix must start with a dot"
        assert isinstance(family.task, Task), "task must be a retrainer.models.base.Task"
        assert family.feature_types and set(family.feature_types) <= set(FeatureType), "feature_types: FeatureType set"
        spec = family.metric_spec
        assert isinstance(spec, MetricSpec), "metric_spec must be a MetricSpec"
        assert spec.live == LIVE_OF[family.task], f"a {family.task} family aggregates live outcomes as {LIVE_OF[family.task]}"
        assert isinstance(task, Task) and LIVE_OF[task] == spec.live, (
            f"an instance's task ({task}) must aggregate live outcomes as the class's ({spec.live})")
        assert isinstance(family.Params, type) and issubclass(family.Params, BaseModel), "Params: a pydantic model"
        try:
            family.Params.model_validate({"no_such_parameter": 1})
        except ValidationError:
            pass  # refused, as it must be
        else:
            raise AssertionError("Params must refuse unknown keys (model_config extra='forbid')")
        family.Params.model_validate(params)

    def init_stores_params_only() -> None:
        est = new()
        learned = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
        assert not learned, f"__init__ must not learn anything; found {learned}"
        got = est.get_params()
        assert all(got.get(k) == v for k, v in params.items()), "get_params must return the parameters given"
        got["__probe__"] = 1
        assert "__probe__" not in est.get_params(), "get_params must return a copy"

    def fit_returns_self_and_learns() -> None:
        est = new()
        assert fit(est) is est, "fit must return self"
        assert [k for k in vars(est) if k.endswith("_")], "fit must store what it learned in attributes ending in _"

    def fit_does_not_change_its_inputs() -> None:
        X, y = train.X.copy(), train.y.copy()
        fit(new())
        pd.testing.assert_frame_equal(train.X, X, obj="X after fit")
        pd.testing.assert_series_equal(train.y, y, obj="y after fit")

    def predictions_have_the_task_shape() -> None:
        p = predict(fit(new()))
        assert isinstance(p, Prediction), "predict must return a retrainer.models.base.Prediction"
        assert len(p) == len(test.y), "one prediction per row"
        if family.task in (Task.BINARY, Task.MULTICLASS):
            assert p.proba is not None and p.classes is not None, "a classifier returns proba and classes"
            assert p.proba.shape == (len(test.y), len(p.classes)), "proba: rows x classes"
            assert np.allclose(p.proba.sum(axis=1), 1), "each row's probabilities sum to 1"
            assert set(np.unique(p.value)) <= set(p.classes), "value holds predicted classes"
        else:
            assert np.isfinite(np.asarray(p.value, dtype=float)).all(), "values must be finite"
        if family.task == Task.FORECAST:
            assert p.lower is not None and p.upper is not None, "a forecast returns its interval"
            assert (p.lower <= p.value + 1e-9).all() and (p.value <= p.upper + 1e-9).all(), "lower <= value <= upper"

    def same_random_state_same_predictions() -> None:
        if "random_state" not in new().get_params():
            return
        a, b = predict(fit(new(random_state=7))), predict(fit(new(random_state=7)))
        np.testing.assert_array_equal(a.value, b.value, err_msg="two fits with one random_state must agree")

    def evaluate_follows_the_metric_spec() -> None:
        est = fit(new())
        metrics = est.evaluate(test.y, predict(est))
        spec = family.metric_spec
        assert isinstance(metrics, Metrics), "evaluate must return Metrics"
        assert set(metrics.values) == set(spec.names), f"evaluate must report exactly {spec.names}"
        assert metrics.primary == spec.primary and metrics.higher_is_better == spec.better_is_higher(spec.primary)
        assert all(isinstance(v, float) for v in metrics.values.values()), "metric values are floats"
        perfect = est.evaluate(test.y, _perfect(test.y, predict(est)))
        assert perfect.improvement_pct(metrics) >= 0, "a perfect prediction must score at least as well"

    def resampled_agrees_with_evaluate() -> None:
        est = fit(new())
        if not callable(getattr(est, "resampled", None)):
            return  # optional: the paired bootstrap falls back to evaluate on each resample
        p, n = predict(est), len(test.y)
        rng = np.random.default_rng(0)
        draws = [np.ones(n, dtype=np.int64), np.bincount([0] * n, minlength=n)]  # the holdout; one row n times
        draws += [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(3)]
        counts = np.stack(draws)
        expected = [est.evaluate(test.y.iloc[rows], p.select(rows)).values
                    for rows in (np.repeat(np.arange(n), c) for c in counts)]
        for metric in family.metric_spec.names:
            got = np.asarray(est.resampled(test.y, p, metric, counts), dtype=float)
            assert got.shape == (len(counts),), f"resampled({metric!r}) must return one value per resample"
            np.testing.assert_allclose(got, [e[metric] for e in expected], rtol=1e-9, atol=1e-12, equal_nan=True,
                                       err_msg=f"resampled({metric!r}) must equal evaluate on the resampled rows")

    def save_load_round_trip() -> None:
        est = fit(new())
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"model{family.artifact_suffix}"
            est.save(path)
            assert path.is_file() and path.stat().st_size > 0, "save must write the file it is given"
            loaded = family.load(path)
        assert isinstance(loaded, family), "load must return an instance of the family"
        np.testing.assert_allclose(_comparable(predict(loaded)), _comparable(predict(est)), rtol=1e-6,
                                   err_msg="a loaded model must predict as the saved one")
        assert loaded.get_params() == est.get_params(), "load must restore the hyper-parameters"

    def refuses_bad_features() -> None:
        est = fit(new())
        numeric = next(c for c in test.X.columns if pd.api.types.is_float_dtype(test.X[c]))
        for bad_value in (np.nan, np.inf):
            bad = test.X.copy()
            bad.loc[bad.index[0], numeric] = bad_value
            try:
                est.predict(bad, time=test.time)
            except DataError:
                continue
            raise AssertionError(f"predict must refuse a {bad_value} feature with DataError, never guess")
        try:
            est.predict(test.X.drop(columns=[numeric]), time=test.time)
        except DataError as exc:
            assert numeric in str(exc), "the DataError must name the missing feature"
        else:
            raise AssertionError("predict must refuse rows that miss a feature, naming it")

    def column_order_and_extra_columns_do_not_matter() -> None:
        est = fit(new())
        shuffled = test.X[list(reversed(test.X.columns))].assign(unrelated_column=1.0)
        np.testing.assert_array_equal(np.asarray(est.predict(shuffled, time=test.time).value),
                                      np.asarray(predict(est).value), err_msg="features are matched by name")

    def fine_tunes_from_a_parent() -> None:
        if not family.can_fine_tune:
            return
        parent = fit(new())
        child = new().fit(test.X, test.y, time=test.time, parent=parent)
        assert len(predict(child)) == len(test.y), "a fine-tuned model predicts"

    def needs_its_time_column() -> None:
        if not family.needs_time:
            return
        try:
            new().fit(train.X, train.y, time=None)
        except DataError:
            return
        raise AssertionError("a family that needs the time column must refuse a fit without it (DataError)")

    def reports_library_versions() -> None:
        versions = fit(new()).library_versions()
        assert versions and all(isinstance(v, str) and v for v in versions.values()), "library_versions: name -> version"

    yield from ((check.__name__, check) for check in (
        declarations, init_stores_params_only, fit_returns_self_and_learns, fit_does_not_change_its_inputs,
        predictions_have_the_task_shape, same_random_state_same_predictions, evaluate_follows_the_metric_spec,
        resampled_agrees_with_evaluate, save_load_round_trip, refuses_bad_features, column_order_and_extra_columns_do_not_matter,
        fine_tunes_from_a_parent, needs_its_time_column, reports_library_versions,
    ))


def _comparable(p: Prediction) -> np.ndarray:
    return p.proba if p.proba is not None else np.asarray(p.value, dtype=float)


def _perfect(y: pd.Series, like: Prediction) -> Prediction:
    """A prediction that is exactly right, in the shape the family returns."""
    truth = np.asarray(y)
    if like.proba is None:
        return Prediction(truth.astype(float), lower=like.lower, upper=like.upper)
    proba = np.array([[1.0 if c == t else 0.0 for c in like.classes] for t in truth])
    return Prediction(truth, proba, like.classes)


def check_family(family: type[Family], params: dict[str, Any] | None = None,
                 data: tuple[pd.DataFrame, pd.Series, pd.Series | None] | None = None) -> None:
    """Run every check; the first that fails raises AssertionError naming the check and the rule."""
    for name, check in family_checks(family, params, data):
        try:
            check()
        except AssertionError as exc:
            raise AssertionError(f"{family.__name__} fails {name}: {exc}") from None
