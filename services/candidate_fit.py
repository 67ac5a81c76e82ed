"""The two ways a candidate's fit differs from a plain one (step 4 of services/retrain.py): it may
continue from production's estimator (a fine-tune), and a promoted one may be refit on every row
before it is deployed (promotion.deploy: refit)."""

from __future__ import annotations

import time

import pandas as pd

from retrainer.config import ModelConfig
from retrainer.db.records import ModelVersion
from retrainer.models.base import ArtifactError, Family, load_family
from retrainer.services import dataset, registry


def fine_tune_parent(estimator: Family, champion: ModelVersion | None,
                     fine_tune: bool) -> tuple[Family | None, str | None]:
    """The production estimator a fine-tune continues from, or None (a full retrain) and why not."""
    if not fine_tune:
        return None, None
    if not estimator.can_fine_tune:
        return None, f"family {estimator.algorithm!r} cannot fine-tune: retrained from scratch"
    if champion is None:
        return None, "no production version to fine-tune: trained from scratch"
    try:
        return registry.load_estimator(champion), f"fine-tuned from {champion.version_id}"
    except ArtifactError as exc:
        return None, f"production artifact unusable ({exc}): retrained from scratch"


def refit_on_every_row(cfg: ModelConfig, frame: pd.DataFrame, parent: Family | None) -> tuple[Family, float]:
    """The same configuration fitted on every row, the holdout included, and the seconds it took."""
    refit = load_family(cfg.family, cfg.params)
    t0 = time.perf_counter()
    refit.fit(dataset.features(frame), frame[dataset.LABEL],
              time=frame[dataset.TIME] if refit.needs_time else None, parent=parent)
    return refit, time.perf_counter() - t0
