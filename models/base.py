"""The family contract (version 2): what a team implements, in one file, to plug in its own model.

In the spirit of the scikit-learn estimator contract: construction stores hyper-parameters only
(validated by the family's `Params` when the configuration loads, not at the first retrain);
`fit(X, y, time=None, parent=None)` learns and returns self, with learned state in attributes
ending in `_`; `predict(X, time=None)` returns a `Prediction`; `evaluate(y, prediction)` returns
`Metrics`; `save(path)` writes the library's own portable format and `load(path)` reads it back.
Checksums are verified by the caller (services.artifacts) before `load`: nothing is deserialised
that a checksum has not vouched for.

A family declares, as class attributes:
- `task`: regression, binary or multiclass classification, or forecast;
- its inputs: `feature_types` it accepts (numeric, categorical, boolean; X arrives with float64,
  pandas `category` and bool columns) and `needs_time` (a forecaster gets the event times);
- its outputs, through `Prediction`: a value per row; class probabilities; a forecast interval;
- `metric_spec`: every metric `evaluate` reports, the default primary one, each one's direction,
  and how live outcomes aggregate (`live`: which SQL aggregate services.accuracy runs);
- `can_fine_tune`: whether `fit(..., parent=...)` continues from a parent version (boosting on,
  warm start) rather than starting over.

Optional: `resampled(y, prediction, metric, counts) -> np.ndarray`, the metric on B bootstrap
resamples of the holdout at once. `counts` is an integer (B, n) matrix, counts[b, i] the number of
times row i is drawn in resample b; the result, shape (B,), must equal `evaluate` on the expanded
rows (`np.repeat(np.arange(n), counts[b])`) to floating tolerance, NaN where evaluate gives NaN.
The promotion gate's paired bootstrap (services.significance) scores both versions on 1,000
resamples with it; a family without it is scored by `evaluate` on each resample (correct, slower).
retrainer.models.resampling holds the vectorised pieces (weighted means, R², ROC AUC, ...).

Features and target arrive apart: no column of X is ever a label, a time or an id.
`retrainer.models.testing.check_family` checks all of this, as scikit-learn's `check_estimator` does.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError


class ArtifactError(Exception):
    """An artifact cannot be used: missing, corrupt, or its checksum does not match."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        super().__init__(f"artifact {self.path}: {problem}")


class DataError(ValueError):
    """The training or scoring data cannot be used as it is (the message says why)."""


class Task(enum.StrEnum):
    REGRESSION = "regression"
    BINARY = "binary"
    MULTICLASS = "multiclass"
    FORECAST = "forecast"


class FeatureType(enum.StrEnum):
    NUMERIC = "numeric"  # float64 in X
    CATEGORICAL = "categorical"  # pandas category in X, categories fixed by the version's schema
    BOOLEAN = "boolean"  # bool in X


class Live(enum.StrEnum):
    """How live outcomes aggregate (services.accuracy), by what a prediction record holds."""

    REGRESSION = "regression"  # predicted and actual numbers: MAE, MSE, RMSE, R², share within ±20 %
    CLASSIFICATION = "classification"  # predicted and actual classes: accuracy, precision, recall
    FORECAST = "forecast"  # predicted and actual hours: MAE, RMSE, shares within 6/12/24 h


# What services.accuracy computes from live outcomes of each kind, name -> higher is better (all
# shares are fractions). precision and recall are of class 1, for binary classifiers only.
LIVE_METRICS: dict[Live, dict[str, bool]] = {
    Live.REGRESSION: {"mae": False, "rmse": False, "r2": True, "within_20pct": True},
    Live.CLASSIFICATION: {"accuracy": True, "precision": True, "recall": True},
    Live.FORECAST: {"mae": False, "rmse": False, "within_6h": True, "within_12h": True, "within_24h": True},
}
DEFAULT_LIVE_METRIC = {Live.REGRESSION: "mae", Live.CLASSIFICATION: "accuracy", Live.FORECAST: "mae"}


@dataclass(frozen=True)
class MetricSpec:
    names: tuple[str, ...]  # every metric `evaluate` reports, in display order
    primary: str  # the default primary metric; a model's configuration may choose another of `names`
    higher_is_better: frozenset[str]  # the metrics where more is better; the others, less is better
    live: Live
    units: dict[str, str] = field(default_factory=dict)  # "fraction", "hours", ... for labels

    def __post_init__(self) -> None:
        if self.primary not in self.names or not self.higher_is_better <= set(self.names):
            raise ValueError(f"metric spec: primary and directions must name metrics of {self.names}")

    def better_is_higher(self, name: str) -> bool:
        return name in self.higher_is_better


@dataclass(frozen=True)
class Prediction:
    """What `predict` returns: one value per row and, by task, more."""

    value: np.ndarray  # regression and forecast: the number; classification: the predicted class
    proba: np.ndarray | None = None  # classification: (rows, classes) probabilities
    classes: tuple[Any, ...] | None = None  # classification: the class of each proba column
    lower: np.ndarray | None = None  # forecast: the interval around `value`
    upper: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.value)

    def confidence(self) -> np.ndarray | None:
        """The probability of the predicted class, for classifiers."""
        return None if self.proba is None else self.proba.max(axis=1)

    def take(self, n: int) -> Prediction:
        cut = (lambda a: None if a is None else a[:n])
        return Prediction(self.value[:n], cut(self.proba), self.classes, cut(self.lower), cut(self.upper))

    def select(self, rows: np.ndarray) -> Prediction:
        """The prediction of these rows (positions, repeats allowed: a bootstrap resample)."""
        pick = (lambda a: None if a is None else np.asarray(a)[rows])
        return Prediction(np.asarray(self.value)[rows], pick(self.proba), self.classes, pick(self.lower),
                          pick(self.upper))


@dataclass(frozen=True)
class Metrics:
    values: dict[str, float]
    primary: str
    higher_is_better: bool  # for the primary metric

    @property
    def score(self) -> float:
        return self.values[self.primary]

    @property
    def not_finite(self) -> list[str]:
        """Metrics that are NaN or infinite (a model that predicts them, an empty holdout)."""
        return [k for k, v in self.values.items() if not math.isfinite(v)]

    def storable(self) -> dict[str, float | None]:
        """The values as JSON can hold them: a NaN or infinity becomes null (JSONB refuses them)."""
        return {k: (v if math.isfinite(v) else None) for k, v in self.values.items()}

    def improvement_pct(self, baseline: Metrics) -> float:
        """Relative improvement of self over baseline on the primary metric, in percent (+ is better)."""
        old, new = baseline.score, self.score
        if old == 0:
            return 0.0 if new == old else (math.inf if self.higher_is_better == (new > old) else -math.inf)
        delta = (new - old) if self.higher_is_better else (old - new)
        return 100.0 * delta / abs(old)

    @classmethod
    def of(cls, values: dict[str, float], spec: MetricSpec, primary: str | None = None) -> Metrics:
        primary = primary or spec.primary
        return cls({k: float(v) for k, v in values.items()}, primary, spec.better_is_higher(primary))


class NoParams(BaseModel):
    """A family without hyper-parameters."""

    model_config = {"extra": "forbid"}


@runtime_checkable
class Family(Protocol):
    name: ClassVar[str]
    algorithm: ClassVar[str]
    artifact_suffix: ClassVar[str]
    task: ClassVar[Task]
    feature_types: ClassVar[frozenset[FeatureType]]
    needs_time: ClassVar[bool]
    can_fine_tune: ClassVar[bool]
    metric_spec: ClassVar[MetricSpec]
    Params: ClassVar[type[BaseModel]]  # validates hyper-parameters; extra keys forbidden

    def __init__(self, **params: Any) -> None: ...
    def get_params(self) -> dict[str, Any]: ...
    def fit(self, X: pd.DataFrame, y: pd.Series, time: pd.Series | None = None,
            parent: Self | None = None) -> Self: ...
    def predict(self, X: pd.DataFrame, time: pd.Series | None = None) -> Prediction: ...
    def evaluate(self, y: pd.Series | np.ndarray, prediction: Prediction) -> Metrics: ...
    def save(self, path: Path) -> None: ...
    @classmethod
    def load(cls, path: Path) -> Self: ...
    def library_versions(self) -> dict[str, str]: ...


def learn_categories(X: pd.DataFrame) -> dict[str, list[str]]:
    """The categories of each categorical column of X (a pandas category column, or text: rows arrive
    as plain strings), as text in a fixed order: what a family saves to code a category as trained."""
    return {
        name: [str(c) for c in (X[name].cat.categories if isinstance(X[name].dtype, pd.CategoricalDtype)
                                else sorted(X[name].dropna().astype(str).unique()))]
        for name in X.columns
        if not (pd.api.types.is_numeric_dtype(X[name]) or pd.api.types.is_bool_dtype(X[name]))
    }


@cache
def family_class(name: str) -> type[Family]:
    for ep in entry_points(group="retrainer.models"):
        if ep.name == name:
            return ep.load()
    raise LookupError(f"unknown model family {name!r}")


def primary_metric(family: str, chosen: str | None = None) -> str:
    """The metric that decides promotion for a model: its configured one, else its family's."""
    return chosen or family_class(family).metric_spec.primary


def check_models(models: dict[str, Any]) -> list[str]:
    """Every model's hyper-parameters and primary metric checked against its family (importing the
    family, not its heavy libraries): one line per problem, naming the model and the key."""
    problems = []
    for name, cfg in models.items():
        cls = family_class(cfg.family)
        try:
            cls.Params.model_validate(cfg.params)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                problems.append(f"models.{name}.params.{where}: {err['msg']} (family {cfg.family})")
        spec = cls.metric_spec
        if cfg.primary_metric is not None and cfg.primary_metric not in spec.names:
            problems.append(f"models.{name}.primary_metric: {cfg.primary_metric!r} is not a metric of family "
                            f"{cfg.family}; choose one of {', '.join(spec.names)}")
        features = getattr(cfg, "features", None)
        if features is not None and not features and not cls.needs_time:
            problems.append(f"models.{name}.features: empty; family {cfg.family} needs at least one feature")
        for feature, kind in (features.items() if isinstance(features, dict) else ()):
            if kind not in cls.feature_types:
                problems.append(f"models.{name}.features.{feature}: family {cfg.family} takes no {kind} feature; "
                                f"it takes {', '.join(sorted(cls.feature_types))}")
        live = LIVE_METRICS[spec.live]
        if cfg.accuracy.metric is not None and cfg.accuracy.metric not in live:
            problems.append(f"models.{name}.accuracy.metric: {cfg.accuracy.metric!r} is not a live metric of family "
                            f"{cfg.family} ({spec.live}); choose one of {', '.join(live)}")
        for key in cfg.promotion.guards:
            if key not in spec.names:
                problems.append(f"models.{name}.promotion.guards.{key}: {key!r} is not a metric of family "
                                f"{cfg.family}; choose one of {', '.join(spec.names)}")
        for key in cfg.promotion.floor:
            if key[4:] not in spec.names:
                problems.append(f"models.{name}.promotion.floor.{key}: {key[4:]!r} is not a metric of family "
                                f"{cfg.family}; choose one of {', '.join(spec.names)}")
    return problems


def live_check(family: str, metric: str | None, threshold: float | None) -> tuple[str, float | None]:
    """The accuracy check's metric and threshold for a model: configured, else the family's live
    default (a family may declare `live_thresholds = {"mae": 0.02}`; without one, no threshold)."""
    cls = family_class(family)
    metric = metric or DEFAULT_LIVE_METRIC[cls.metric_spec.live]
    if threshold is None:
        threshold = getattr(cls, "live_thresholds", {}).get(metric)
    return metric, threshold


def load_family(name: str, params: dict[str, Any] | None = None) -> Family:
    return family_class(name)(**(params or {}))
