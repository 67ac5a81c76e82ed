"""The family protocol, in the spirit of the scikit-learn estimator contract.

Construction stores hyper-parameters only; `fit(frame)` learns and returns self (learned state in
attributes ending in `_`); `predict(frame)`; `evaluate(y_true, y_pred)` gives Metrics with one
primary score and its direction; `save(path)` writes the library's own portable format and
`load(path)` reads it back. Checksums are verified by the caller (services.artifacts) before load:
nothing is deserialised that a checksum has not vouched for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

LABEL = "label"  # the frame column that holds the target
TIME = "event_time"  # the frame column that orders rows in time


class ArtifactError(Exception):
    """An artifact cannot be used: missing, corrupt, or its checksum does not match."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        super().__init__(f"artifact {self.path}: {problem}")


class DataError(ValueError):
    """The training or scoring data cannot be used as it is (the message says why)."""


@dataclass(frozen=True)
class Metrics:
    values: dict[str, float]
    primary: str
    higher_is_better: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.values[self.primary]

    def improvement_pct(self, baseline: Metrics) -> float:
        """Relative improvement of self over baseline on the primary metric, in percent (+ is better)."""
        old, new = baseline.score, self.score
        if old == 0:
            return 0.0 if new == old else (math.inf if self.higher_is_better == (new > old) else -math.inf)
        delta = (new - old) if self.higher_is_better else (old - new)
        return 100.0 * delta / abs(old)


@runtime_checkable
class Family(Protocol):
    name: ClassVar[str]
    algorithm: ClassVar[str]
    artifact_suffix: ClassVar[str]

    def __init__(self, **params: Any) -> None: ...
    def get_params(self) -> dict[str, Any]: ...
    def fit(self, frame: pd.DataFrame) -> Self: ...
    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...
    def evaluate(self, y_true: np.ndarray, y_pred: np.ndarray) -> Metrics: ...
    def save(self, path: Path) -> None: ...
    @classmethod
    def load(cls, path: Path) -> Self: ...
    def library_versions(self) -> dict[str, str]: ...


@cache
def family_class(name: str) -> type[Family]:
    for ep in entry_points(group="retrainer.models"):
        if ep.name == name:
            return ep.load()
    raise LookupError(f"unknown model family {name!r}")


def load_family(name: str, params: dict[str, Any] | None = None) -> Family:
    return family_class(name)(**(params or {}))
