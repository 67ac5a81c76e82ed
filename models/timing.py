"""`timing`: when the next event happens, in hours, forecast by Prophet, saved as Prophet's own JSON.

Inputs: the event times (`needs_time`: a fit without them is refused) and any features, each one a
Prophet extra regressor: numeric and boolean as numbers, a categorical one as a 0/1 regressor per
category seen in fit (an unseen category or a missing value is all zeros). No features at all is
fine: the time column alone.

Outputs: `value` is Prophet's yhat, `lower`/`upper` its interval (yhat_lower/yhat_upper at
`interval_width`), all clipped at 0 h. A negative wait means nothing, and since labels are >= 0,
clipping can only shrink an error: no metric gets worse. (A log transform would also keep forecasts
positive, but it fits a geometric mean and turns the additive daily rhythm multiplicative.)

Metrics, named as the reference's tables (the pipeline reports them as test_mae_hours, ...):
mae_hours, rmse_hours, within_{6,12,24}h_accuracy (the fraction of rows with |error| <= 6, 12,
24 h) and overall_score = 0.7 * within_6h + 0.3 * (1 - normalised MAE), normalised MAE = MAE /
100 h clipped to [0, 1]. The reference gives the formula, not the normaliser; its worked example
(MAE 8.45 h, within 6 h 62.5 % -> 0.7123) is reproduced by 100 h and by nothing rounder (24 h gives
0.632). The primary metric is overall_score, higher is better: the reference promotes on it.

Determinism: Prophet has no seed. Fitting is a MAP estimate (L-BFGS from fixed initial values; the
optimiser is seeded with random_state all the same), so one data set gives one model; the interval
is sampled from NumPy's global generator, which predict seeds with random_state and then restores.

Fine-tuning is Prophet's documented warm start: the child starts optimising from the parent's
parameters (restored by model_from_json) with the parent's features. It is a starting point, not a
memory: the optimum depends on the child's data only, so fit the child on the full history.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from retrainer.models import resampling
from retrainer.models.base import DataError, FeatureType, Live, Metrics, MetricSpec, Prediction, Task, learn_categories

WITHIN_HOURS = (6, 12, 24)
MAE_SCALE_HOURS = 100.0  # normalised MAE = MAE / 100 h, clipped to [0, 1] (see the module docstring)
FORMAT = "retrainer.timing/1"  # the artifact: {"format", "params", "features", "categories", "prophet"}


class TimingParams(BaseModel):
    """Prophet's settings that retrainer exposes; anything else is refused when the configuration loads."""

    model_config = ConfigDict(extra="forbid")
    growth: Literal["linear", "flat"] = "linear"
    changepoint_prior_scale: float = Field(0.05, gt=0)
    n_changepoints: int = Field(25, ge=0, le=500)
    changepoint_range: float = Field(0.8, gt=0, le=1)
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    seasonality_prior_scale: float = Field(10.0, gt=0)
    daily_seasonality: bool | Literal["auto"] = "auto"  # auto: on when rows are sub-daily over >= 2 days
    weekly_seasonality: bool | Literal["auto"] = "auto"
    yearly_seasonality: bool | Literal["auto"] = "auto"
    regressor_prior_scale: float = Field(10.0, gt=0)
    interval_width: float = Field(0.8, gt=0, lt=1)
    uncertainty_samples: int = Field(200, ge=10, le=10_000)  # the interval is an output: never 0 (Prophet's off)
    random_state: int = Field(42, ge=0, lt=2**32)


@contextmanager
def _quiet(levels: dict[str, int]) -> Iterator[None]:
    """Raise these loggers to at least these levels for one call; each gets its own level back after."""
    loggers = {logging.getLogger(name): level for name, level in levels.items()}
    before = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)


CHATTER = {"cmdstanpy": logging.WARNING, "prophet": logging.WARNING}  # "Chain [1] start processing" ...


def _prophet() -> Any:
    """The prophet package, imported on first use so that importing this module stays cheap. Its import
    logs an error when plotly is absent; a worker draws no plots, so that is silenced. cmdstanpy sets
    its logger up on first use (level DEBUG, a handler of its own), which would undo a quiet fit's
    level: that happens here, outside the quiet."""
    with _quiet({"prophet.plot": logging.CRITICAL}):
        import prophet
        import prophet.serialize
    from cmdstanpy.utils import get_logger

    get_logger()
    return prophet


def timing_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    err = np.abs(np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float))
    values = {"mae_hours": float(np.mean(err)), "rmse_hours": float(np.sqrt(np.mean(err**2)))}
    values |= {f"within_{h}h_accuracy": float(np.mean(err <= h)) for h in WITHIN_HOURS}
    normalised_mae = min(max(values["mae_hours"] / MAE_SCALE_HOURS, 0.0), 1.0)
    values["overall_score"] = 0.7 * values["within_6h_accuracy"] + 0.3 * (1.0 - normalised_mae)
    return values


class TimingFamily:
    name: ClassVar[str] = "timing"
    algorithm: ClassVar[str] = "prophet"
    artifact_suffix: ClassVar[str] = ".json"
    task: ClassVar[Task] = Task.FORECAST
    feature_types: ClassVar[frozenset[FeatureType]] = frozenset(FeatureType)
    needs_time: ClassVar[bool] = True
    can_fine_tune: ClassVar[bool] = True
    # live metric -> its name in evaluate's metrics (the accuracy check's relative threshold reads it)
    live_holdout_metric: ClassVar[dict[str, str]] = {"mae": "mae_hours", "rmse": "rmse_hours",
                                                     **{f"within_{h}h": f"within_{h}h_accuracy" for h in WITHIN_HOURS}}
    metric_spec: ClassVar[MetricSpec] = MetricSpec(
        names=("mae_hours", "rmse_hours", *(f"within_{h}h_accuracy" for h in WITHIN_HOURS), "overall_score"),
        primary="overall_score",
        higher_is_better=frozenset({*(f"within_{h}h_accuracy" for h in WITHIN_HOURS), "overall_score"}),
        live=Live.FORECAST,
        units={"mae_hours": "hours", "rmse_hours": "hours", "overall_score": "score 0-1",
               **{f"within_{h}h_accuracy": f"fraction within {h} h" for h in WITHIN_HOURS}},
    )
    Params: ClassVar[type[BaseModel]] = TimingParams

    def __init__(self, **params: Any) -> None:
        self.params = TimingParams(**params).model_dump()

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def _learn_columns(self, X: pd.DataFrame) -> None:
        self.features_ = list(X.columns)
        self.categories_ = learn_categories(X)

    def _frame(self, X: pd.DataFrame, time: pd.Series | None) -> pd.DataFrame:
        """Prophet's input: ds (UTC without a zone, which Prophet requires) and one column per regressor,
        named by position (f0, f1_2, ...) so no feature name can clash with Prophet's reserved ones."""
        if time is None:
            raise DataError("the timing family needs the event times: pass time=")
        if len(time) != len(X):
            raise DataError(f"{len(time)} event times for {len(X)} rows")
        try:
            ds = pd.to_datetime(pd.Series(np.asarray(time)), utc=True).dt.tz_localize(None)
        except (TypeError, ValueError) as exc:
            raise DataError(f"event times are not times: {exc}") from exc
        if ds.isna().any():
            raise DataError("event times contain missing values")
        missing = [f for f in self.features_ if f not in X.columns]
        if missing:
            raise DataError(f"missing feature column(s): {', '.join(missing)}")
        columns: dict[str, Any] = {"ds": ds.to_numpy()}
        for i, name in enumerate(self.features_):
            if name in self.categories_:
                text = X[name].astype("string")
                for j, category in enumerate(self.categories_[name]):
                    columns[f"f{i}_{j}"] = text.eq(category).fillna(False).to_numpy(dtype=float)
                continue
            values = X[name].to_numpy(dtype=float)
            if not np.isfinite(values).all():
                raise DataError(f"feature {name!r} contains NaN or infinite values")
            columns[f"f{i}"] = values
        return pd.DataFrame(columns)

    def fit(self, X: pd.DataFrame, y: pd.Series, time: pd.Series | None = None, parent: Self | None = None) -> Self:
        if time is None:
            raise DataError("the timing family needs the event times: fit(X, y, time=...)")
        target = np.asarray(y, dtype=float)
        if not np.isfinite(target).all() or (target < 0).any():
            raise DataError("labels must be finite hours >= 0 (found NaN, infinite or negative values)")
        if parent is not None:  # warm start: the parent's regressors, so its coefficients line up
            self.features_, self.categories_ = list(parent.features_), dict(parent.categories_)
        else:
            self._learn_columns(X)
        frame = self._frame(X, time).assign(y=target)
        if frame["ds"].nunique() < 2:
            raise DataError("Prophet needs at least two distinct event times")
        p = self.params
        kwargs: dict[str, Any] = {"seed": p["random_state"]}
        if parent is not None:  # Prophet's documented warm start; a MAP fit holds one draw (row 0) of each
            start = parent.model_.params
            kwargs["init"] = {k: start[k][0][0] for k in ("k", "m", "sigma_obs")} | {k: start[k][0] for k in ("delta", "beta")}
        prophet = _prophet()  # before the quiet: see _prophet
        with _quiet(CHATTER):
            model = prophet.Prophet(
                growth=p["growth"], changepoint_prior_scale=p["changepoint_prior_scale"],
                n_changepoints=p["n_changepoints"], changepoint_range=p["changepoint_range"],
                seasonality_mode=p["seasonality_mode"], seasonality_prior_scale=p["seasonality_prior_scale"],
                daily_seasonality=p["daily_seasonality"], weekly_seasonality=p["weekly_seasonality"],
                yearly_seasonality=p["yearly_seasonality"], interval_width=p["interval_width"],
                uncertainty_samples=p["uncertainty_samples"],
            )
            for column in frame.columns.drop(["ds", "y"]):
                model.add_regressor(column, prior_scale=p["regressor_prior_scale"])
            try:
                model.fit(frame, **kwargs)
            finally:
                model.stan_backend.cleanup()  # cmdstan's CSV files: a worker would pile them up in /tmp
        self.model_ = model
        return self

    def predict(self, X: pd.DataFrame, time: pd.Series | None = None) -> Prediction:
        frame = self._frame(X, time)
        order = np.argsort(frame["ds"].to_numpy(), kind="stable")  # Prophet returns rows sorted by ds
        state = np.random.get_state()
        np.random.seed(self.params["random_state"])  # the interval's draws; the caller's generator comes back
        try:
            with _quiet(CHATTER):
                forecast = self.model_.predict(frame)
        finally:
            np.random.set_state(state)
        out = {}
        for key in ("yhat", "yhat_lower", "yhat_upper"):
            out[key] = np.empty(len(frame))
            out[key][order] = np.clip(forecast[key].to_numpy(dtype=float), 0.0, None)
        value = out["yhat"]
        # The interval is percentiles of sampled draws; a narrow one, or few draws, can miss the point: widen.
        return Prediction(value, lower=np.minimum(out["yhat_lower"], value), upper=np.maximum(out["yhat_upper"], value))

    def evaluate(self, y: Any, prediction: Prediction) -> Metrics:
        return Metrics.of(timing_metrics(y, prediction.value), self.metric_spec)

    def resampled(self, y: Any, prediction: Prediction, metric: str, counts: np.ndarray) -> np.ndarray:
        truth = np.asarray(y, dtype=float)
        counts = resampling.check_counts(counts, len(truth))
        err = np.abs(np.asarray(prediction.value, dtype=float) - truth)
        if metric == "mae_hours":
            return resampling.weighted_mean(counts, err)
        if metric == "rmse_hours":
            return resampling.weighted_rms(counts, err)
        if metric.startswith("within_") and metric in self.metric_spec.names:
            return resampling.weighted_mean(counts, err <= int(metric.split("_")[1].removesuffix("h")))
        if metric == "overall_score":
            within_6h = resampling.weighted_mean(counts, err <= 6)
            normalised_mae = np.clip(resampling.weighted_mean(counts, err) / MAE_SCALE_HOURS, 0.0, 1.0)
            return 0.7 * within_6h + 0.3 * (1.0 - normalised_mae)
        raise resampling.unknown(metric, self.metric_spec.names)

    def save(self, path: Path) -> None:
        prophet_json = _prophet().serialize.model_to_json(self.model_)
        document = {"format": FORMAT, "params": self.params, "features": self.features_,
                    "categories": self.categories_, "prophet": json.loads(prophet_json)}
        path.write_text(json.dumps(document))

    @classmethod
    def load(cls, path: Path) -> Self:
        document = json.loads(Path(path).read_text())
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise DataError(f"{path} is not a retrainer timing model (format {FORMAT!r})")
        prophet = _prophet()
        with _quiet(CHATTER):
            model = prophet.serialize.model_from_json(json.dumps(document["prophet"]))
        self = cls(**document["params"])
        self.model_, self.features_, self.categories_ = model, document["features"], document["categories"]
        return self

    def library_versions(self) -> dict[str, str]:
        import cmdstanpy

        return {"prophet": _prophet().__version__, "cmdstanpy": cmdstanpy.__version__, "numpy": np.__version__,
                "pandas": pd.__version__}
