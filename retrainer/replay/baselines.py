"""Prequential scores and the two baselines replay compares the loop with, on the same rows.

Prequential (test-then-train): every row after the warm-up is predicted before its label is used,
and the score is the mean over those rows: accuracy for a classifier (the share of right classes),
MAE for a regressor. The baselines are fitted in this process with the model's own family and
hyper-parameters, so they differ from the loop only in when they retrain:

- never: fitted once on the warm-up rows and never again;
- periodic: refitted every `every_rows` rows on the most recent `max_rows` rows (the loop's
  training.max_rows), and always deployed: blind periodic retraining, no check, no judgement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrainer.models.base import DataError, Family, Live, load_family
from retrainer.replay.stream import Stream

METRICS = {Live.CLASSIFICATION: "accuracy", Live.REGRESSION: "mae"}


def score(metric: str, labels: np.ndarray, predicted: np.ndarray) -> float:
    if metric == "accuracy":
        return float(np.mean(predicted == labels))
    return float(np.mean(np.abs(predicted - labels)))


@dataclass(frozen=True)
class Baseline:
    predicted: np.ndarray  # one value per row after the warm-up
    retrains: int  # fits after the warm-up one


def fit(family: str, params: dict, stream: Stream, start: int, stop: int) -> Family:
    return load_family(family, params).fit(stream.features.iloc[start:stop], stream.labels[start:stop])


def never(stream: Stream, family: str, params: dict, warmup: int) -> Baseline:
    model = fit(family, params, stream, 0, warmup)
    return Baseline(np.asarray(model.predict(stream.features.iloc[warmup:]).value, dtype=float), 0)


def periodic(stream: Stream, family: str, params: dict, warmup: int, every_rows: int, max_rows: int) -> Baseline:
    """Refit at rows warmup + k * every_rows on the newest max_rows rows before it. A window a family
    cannot fit (a classifier's window of one class) keeps the previous model, and is not counted."""
    model = fit(family, params, stream, 0, warmup)
    parts, retrains = [], 0
    for start in range(warmup, len(stream), every_rows):
        if start > warmup:
            try:
                model = fit(family, params, stream, max(0, start - max_rows), start)
                retrains += 1
            except DataError:  # a window the family cannot fit: the previous model serves on, uncounted
                pass
        stop = min(start + every_rows, len(stream))
        parts.append(np.asarray(model.predict(stream.features.iloc[start:stop]).value, dtype=float))
    return Baseline(np.concatenate(parts), retrains)
