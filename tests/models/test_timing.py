"""The timing family's own promises: its metrics as the reference defines them, the forecast interval,
the time column it needs, its JSON artifact, and a daily rhythm learned (the kit checks the rest)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from retrainer.models.base import DataError, Prediction
from retrainer.models.timing import TimingFamily

FAST = {"uncertainty_samples": 100}


def daily_rhythm(n: int = 720, seed: int = 0, noise: float = 1.0) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Hours until the next event, every 30 min for 15 days: long waits at night, short ones by day."""
    rng = np.random.default_rng(seed)
    time = pd.Series(pd.date_range("2024-03-01", periods=n, freq="30min", tz="UTC"))
    hours = 10 + 8 * np.cos(2 * np.pi * time.dt.hour.to_numpy() / 24) + rng.normal(0, noise, n)
    return pd.DataFrame(index=range(n)), pd.Series(np.clip(hours, 0, None), name="y"), time


def test_metrics_match_their_definitions() -> None:
    y = np.array([10.0, 20.0, 5.0, 30.0])
    p = np.array([14.0, 33.0, 5.0, 55.0])  # errors 4, 13, 0, 25 h
    m = TimingFamily().evaluate(y, Prediction(p))
    assert m.primary == "overall_score" and m.higher_is_better is True
    assert m.values["mae_hours"] == pytest.approx(42 / 4)
    assert m.values["rmse_hours"] == pytest.approx(np.sqrt((16 + 169 + 0 + 625) / 4))
    assert m.values["within_6h_accuracy"] == 0.5  # 4 h and 0 h
    assert m.values["within_12h_accuracy"] == 0.5  # 13 h is not within 12 h
    assert m.values["within_24h_accuracy"] == 0.75  # 25 h is not within 24 h
    assert m.values["overall_score"] == pytest.approx(0.7 * 0.5 + 0.3 * (1 - 10.5 / 100))


def test_overall_score_reproduces_the_reference_figures() -> None:
    # The reference's run: "MAE: 8.45h | Within 6h: 62.5% | Overall score: 0.7123". Eight rows, five
    # within 6 h, mean error 8.45 h: MAE normalised by 100 h gives its score, to its rounding.
    errors = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 13.6, 18.0, 21.0])
    assert errors.mean() == pytest.approx(8.45)
    m = TimingFamily().evaluate(np.full(8, 24.0), Prediction(24.0 + errors))
    assert m.values["within_6h_accuracy"] == 0.625
    assert m.values["overall_score"] == pytest.approx(0.7123, abs=2e-4)


def test_normalised_mae_is_clipped_to_one() -> None:
    far = TimingFamily().evaluate(np.zeros(4), Prediction(np.full(4, 500.0)))
    assert far.values["overall_score"] == 0.0  # nothing within 6 h, and MAE beyond 100 h counts as 1


def test_interval_holds_the_forecast_and_widens_with_its_width() -> None:
    X, y, time = daily_rhythm(noise=2.0)
    widths = {}
    for width in (0.5, 0.95):
        est = TimingFamily(interval_width=width, **FAST).fit(X.iloc[:600], y.iloc[:600], time=time.iloc[:600])
        p = est.predict(X.iloc[600:], time=time.iloc[600:])
        assert (p.lower <= p.value).all() and (p.value <= p.upper).all() and (p.lower >= 0).all()
        widths[width] = float(np.mean(p.upper - p.lower))
        if width == 0.95:
            covered = np.mean((y.iloc[600:] >= p.lower) & (y.iloc[600:] <= p.upper))
            assert covered > 0.8  # a 95 % interval on noise of 2 h holds most outcomes
    assert widths[0.95] > 1.5 * widths[0.5]


def test_forecasts_are_never_negative() -> None:
    time = pd.Series(pd.date_range("2024-03-01", periods=400, freq="h", tz="UTC"))
    falling = pd.Series(np.linspace(40, 1, 400))  # a trend that would cross zero a day later
    est = TimingFamily(**FAST).fit(pd.DataFrame(index=range(400)), falling, time=time)
    later = pd.Series(pd.date_range("2024-03-20", periods=48, freq="h", tz="UTC"))
    p = est.predict(pd.DataFrame(index=range(48)), time=later)
    assert (p.value == 0).any() and (p.value >= 0).all() and (p.lower >= 0).all()


def test_refuses_a_fit_or_a_forecast_without_times_and_bad_labels() -> None:
    X, y, time = daily_rhythm(n=100)
    with pytest.raises(DataError, match="event times"):
        TimingFamily().fit(X, y)
    est = TimingFamily(**FAST).fit(X, y, time=time)
    with pytest.raises(DataError, match="event times"):
        est.predict(X)
    with pytest.raises(DataError, match="hours >= 0"):
        TimingFamily().fit(X, y - 100, time=time)


def test_save_load_round_trip_through_prophets_json(tmp_path: Path) -> None:
    X, y, time = daily_rhythm(n=400)
    X = X.assign(load=np.linspace(0, 1, 400), channel=pd.Categorical(["app", "web"] * 200))
    est = TimingFamily(changepoint_prior_scale=0.1, **FAST).fit(X.iloc[:320], y.iloc[:320], time=time.iloc[:320])
    path = tmp_path / "model.json"
    est.save(path)

    document = json.loads(path.read_text())  # one JSON document, nothing pickled
    assert document["format"] == "retrainer.timing/1"
    assert document["features"] == ["load", "channel"] and document["categories"] == {"channel": ["app", "web"]}
    assert document["params"]["changepoint_prior_scale"] == 0.1
    assert sorted(document["prophet"]["extra_regressors"][0]) == ["f0", "f1_0", "f1_1"]

    loaded = TimingFamily.load(path)
    before, after = (m.predict(X.iloc[320:], time=time.iloc[320:]) for m in (est, loaded))
    for part in ("value", "lower", "upper"):
        np.testing.assert_allclose(getattr(after, part), getattr(before, part), rtol=1e-9)
    assert loaded.get_params() == est.get_params()

    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DataError, match="not a retrainer timing model"):
        TimingFamily.load(path)


def test_learns_a_daily_rhythm_better_than_a_constant() -> None:
    X, y, time = daily_rhythm()
    est = TimingFamily(**FAST).fit(X.iloc[:600], y.iloc[:600], time=time.iloc[:600])  # time alone, no features
    truth = y.iloc[600:]
    learned = est.evaluate(truth, est.predict(X.iloc[600:], time=time.iloc[600:]))
    constant = est.evaluate(truth, Prediction(np.full(len(truth), y.iloc[:600].median())))
    assert learned.values["mae_hours"] < 0.3 * constant.values["mae_hours"]
    assert learned.values["within_6h_accuracy"] == 1.0
    assert learned.improvement_pct(constant) > 20


def test_rows_come_back_in_the_order_given() -> None:
    X, y, time = daily_rhythm(n=300)
    est = TimingFamily(**FAST).fit(X, y, time=time)
    future = time.iloc[-48:] + pd.Timedelta(days=1)
    shuffled = np.random.default_rng(3).permutation(48)
    in_order = est.predict(X.iloc[:48], time=future)
    mixed = est.predict(X.iloc[:48], time=future.iloc[shuffled])
    np.testing.assert_allclose(mixed.value, in_order.value[shuffled])


def test_interval_is_seeded_and_leaves_numpys_generator_alone() -> None:
    X, y, time = daily_rhythm(n=300, noise=2.0)
    est = TimingFamily(**FAST).fit(X, y, time=time)
    np.random.seed(5)
    expected = np.random.random()
    np.random.seed(5)
    a = est.predict(X.iloc[:24], time=time.iloc[:24])
    b = est.predict(X.iloc[:24], time=time.iloc[:24])
    assert np.random.random() == expected  # the caller's draws are untouched
    np.testing.assert_array_equal(a.lower, b.lower)


def test_fit_is_quiet_and_leaves_logging_as_it_was(caplog: pytest.LogCaptureFixture) -> None:
    X, y, time = daily_rhythm(n=200)
    with caplog.at_level(logging.DEBUG, logger="cmdstanpy"), caplog.at_level(logging.DEBUG, logger="prophet"):
        TimingFamily(**FAST).fit(X, y, time=time)
        assert logging.getLogger("cmdstanpy").level == logging.DEBUG  # restored after the fit
    chatter = [r for r in caplog.records if r.name.startswith(("cmdstanpy", "prophet")) and r.levelno < logging.WARNING]
    assert not chatter, [r.getMessage() for r in chatter]


def test_a_categorical_feature_carries_signal() -> None:
    X, y, time = daily_rhythm()
    channel = np.where(np.arange(len(y)) % 3 == 0, "push", "email")
    X = X.assign(channel=channel)
    y = y + 6 * (channel == "push")
    est = TimingFamily(**FAST).fit(X.iloc[:600], y.iloc[:600], time=time.iloc[:600])
    p = est.predict(X.iloc[600:], time=time.iloc[600:]).value
    push = channel[600:] == "push"
    assert p[push].mean() - p[~push].mean() == pytest.approx(6, abs=1)
    unseen = est.predict(X.iloc[600:].assign(channel="sms"), time=time.iloc[600:])
    assert np.isfinite(unseen.value).all()  # an unseen category counts as none of the known ones


def test_hyper_parameters_are_checked() -> None:
    with pytest.raises(ValidationError, match="changepoint_prior_scale"):
        TimingFamily(changepoint_prior_scale=0)
    with pytest.raises(ValidationError, match="uncertainty_samples"):
        TimingFamily(uncertainty_samples=0)  # the interval is an output: it cannot be switched off
    with pytest.raises(ValidationError, match="mcmc_samples"):
        TimingFamily(mcmc_samples=100)
