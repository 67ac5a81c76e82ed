"""Guard metrics: a candidate that improves the primary metric may not worsen another one beyond its
tolerance, on the whole holdout or in any configured segment (accuracy.segments) with enough rows.

A segment key is read from the holdout's feature column of that name: segments that are not
features (only on prediction records) cannot be judged on training rows and are skipped, and the
decision record says so.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from retrainer.models.base import Family, Prediction
from retrainer.services.policy import Guard


def measure(family: Family, holdout: pd.DataFrame, label: str, candidate: Prediction, champion: Prediction,
            guards: dict[str, float], segments: list[str], min_rows: int) -> tuple[Guard, ...]:
    if not guards:
        return ()
    out = [_guard(family, holdout[label].to_numpy(), candidate, champion, metric, tolerance, None)
           for metric, tolerance in guards.items()]
    for key in segments:
        if key not in holdout.columns:
            continue
        values = holdout[key].astype(str).to_numpy()
        for value in sorted(set(values)):
            rows = np.flatnonzero(values == value)
            if len(rows) < min_rows:
                continue
            y = holdout[label].to_numpy()[rows]
            for metric, tolerance in guards.items():
                out.append(_guard(family, y, candidate.select(rows), champion.select(rows), metric, tolerance,
                                  f"{key}={value}"))
    return tuple(out)


def _guard(family: Family, y: np.ndarray, candidate: Prediction, champion: Prediction, metric: str,
           tolerance: float, segment: str | None) -> Guard:
    cand = family.evaluate(y, candidate).values[metric]
    champ = family.evaluate(y, champion).values[metric]
    higher = family.metric_spec.better_is_higher(metric)
    worse = (champ - cand) if higher else (cand - champ)
    if champ != 0 and math.isfinite(champ):
        worse_pct = 100.0 * worse / abs(champ)
    else:  # no scale to be relative to: any worsening of a perfect or unmeasurable champion counts fully
        worse_pct = 0.0 if worse <= 0 else math.inf
    return Guard(metric, segment, float(cand), float(champ), float(worse_pct), tolerance, len(y))

