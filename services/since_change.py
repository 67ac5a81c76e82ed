"""Retrain on the new world only: when a breached accuracy check finds the moment the production version
got worse (services/change_point.py on its own live record), the retrain it asks for trains on the rows
from that moment on, and waits until there are enough of them for a candidate that can be judged.

Why: a candidate fitted on a window that is mostly the old concept learns the old concept; it may still
beat a champion that is worse on the newest rows and be promoted, and a relative threshold anchored on
its holdout then cannot see that it is poor (benchmarks/README.md (j), agrawal). Waiting costs the rows it
waits for, which a candidate fitted on too few rows would lose anyway (kept for too small a holdout).

Without a significant change (a model that was never as good as its holdout said, a slow drift the
test cannot place) the check asks for an ordinary retrain on the newest rows, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer.config import ModelConfig
from retrainer.db.records import ModelVersion, Observation, PredictionKind, PredictionRecord, PredictionStatus
from retrainer.models.base import Live
from retrainer.services import change_point

P = PredictionRecord
CAP = 20_000  # the newest outcomes of the production version the test reads


@dataclass(frozen=True)
class Change:
    at: datetime  # when the first outcome of the worse regime was served
    shift: change_point.Shift
    outcomes: int  # of the production version, tested
    rows: int  # labelled rows stored from `at` on
    needed: int

    @property
    def ready(self) -> bool:
        return self.rows >= self.needed

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "loss_before": self.shift.before, "loss_after": self.shift.after,
                "p_value": self.shift.p_value, "outcomes": self.outcomes, "rows_since": self.rows,
                "rows_needed": self.needed}

    def describe(self) -> str:
        return (f"it got worse at {self.at.isoformat()} (mean loss {self.shift.before:.4g} -> {self.shift.after:.4g}, "
                f"CUSUM p={self.shift.p_value:.2g} over {self.outcomes} outcomes)")


def rows_needed(cfg: ModelConfig) -> int | None:
    """Rows a retrain on the new world needs: enough for a holdout the promotion gate judges
    (promotion.min_holdout_rows at training.test_fraction) and for training.min_samples. None when the
    check does not plan the window: turned off, or the rows come from the user's own query."""
    if not cfg.accuracy.train_after_change or cfg.training.source is not None:
        return None
    return max(cfg.training.min_samples,
               math.ceil(cfg.promotion.min_holdout_rows / cfg.training.test_fraction))


def losses(session: Session, model: str, version: ModelVersion, kind: Live) -> tuple[np.ndarray, list[datetime]]:
    """The version's per-outcome losses in the order served (at most CAP, the newest; every outcome the
    accuracy check measures it on): 0/1 errors for a classifier, absolute errors otherwise."""
    where = [P.model == model, P.version_id == version.version_id, P.status == PredictionStatus.COMPLETED,
             P.kind == PredictionKind(kind.value)]
    rows = session.execute(sa.select(P.predicted_at, P.actual, P.predicted).where(*where)
                           .order_by(P.predicted_at.desc(), P.id.desc()).limit(CAP)).all()[::-1]
    actual = np.array([r.actual for r in rows], dtype=float)
    predicted = np.array([r.predicted for r in rows], dtype=float)
    loss = (actual != predicted).astype(float) if kind == Live.CLASSIFICATION else np.abs(actual - predicted)
    return loss, [r.predicted_at for r in rows]


def find(session: Session, model: str, version: ModelVersion, kind: Live, needed: int) -> Change | None:
    """The significant worsening in the version's live record, with the rows stored since it; or None."""
    loss, served = losses(session, model, version, kind)
    shift = change_point.mean_shift(loss)
    if shift is None or not shift.worse:
        return None
    at = served[shift.index]
    rows = int(session.scalar(sa.select(sa.func.count()).where(Observation.model == model,
                                                                Observation.event_time >= at)) or 0)
    return Change(at, shift, len(loss), rows, needed)
