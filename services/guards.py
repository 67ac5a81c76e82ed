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
    y = holdout[label].to_numpy()
    out = _guards(family, y, candidate, champion, guards, None)
    for key in segments:
        if key not in holdout.columns:
            continue
        values = holdout[key].astype(str).to_numpy()
        for value in sorted(set(values)):
            rows = np.flatnonzero(values == value)
            if len(rows) >= min_rows:
                out += _guards(family, y[rows], candidate.select(rows), champion.select(rows), guards,
                               f"{key}={value}")
    return tuple(out)


def _guards(family: Family, y: np.ndarray, candidate: Prediction, champion: Prediction, guards: dict[str, float],
            segment: str | None) -> list[Guard]:
    """Every guarded metric on these rows: each version evaluated once, whatever the number of guards."""
    cand, champ = family.evaluate(y, candidate).values, family.evaluate(y, champion).values
    return [_guard(family.metric_spec.better_is_higher(metric), cand[metric], champ[metric], metric, tolerance,
                   segment, len(y)) for metric, tolerance in guards.items()]


def _guard(higher: bool, cand: float, champ: float, metric: str, tolerance: float, segment: str | None,
           rows: int) -> Guard:
    worse = (champ - cand) if higher else (cand - champ)
    if champ != 0 and math.isfinite(champ):
        worse_pct = 100.0 * worse / abs(champ)
    else:  # no scale to be relative to: any worsening of a perfect or unmeasurable champion counts fully
        worse_pct = 0.0 if worse <= 0 else math.inf
    return Guard(metric, segment, float(cand), float(champ), float(worse_pct), tolerance, rows)
