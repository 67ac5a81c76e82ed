"""Training data: load the most recent labelled rows, validate them, split them by time."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from models.base import LABEL, TIME, DataError
from retrainer.db.records import Observation


@dataclass(frozen=True)
class Holdout:
    start: datetime
    end: datetime
    rows: int
    hash: str  # sha256 over (row id, label): proves two evaluations scored the same rows


@dataclass(frozen=True)
class Validated:
    frame: pd.DataFrame
    dropped: int
    problems: dict[str, int]


def load(session: Session, model: str, max_rows: int) -> pd.DataFrame:
    """The newest `max_rows` observations, oldest first, features expanded to columns."""
    # Features come back as JSON text and are decoded in ONE json.loads of the whole column:
    # decoding row by row was 75 % of a 100k-row retrain (benchmarks/README.md, retrain_overhead).
    rows = session.execute(
        sa.select(Observation.id, Observation.event_time, Observation.label, sa.cast(Observation.features, sa.Text))
        .where(Observation.model == model)
        .order_by(Observation.event_time.desc(), Observation.id.desc())
        .limit(max_rows)
    ).all()
    if not rows:
        return pd.DataFrame(columns=["row_id", TIME, LABEL])
    rows.reverse()
    ids, times, labels, texts = zip(*rows, strict=True)
    features = pd.DataFrame.from_records(json.loads("[" + ",".join(texts) + "]"))
    base = pd.DataFrame({"row_id": ids, TIME: times, LABEL: labels})
    return pd.concat([base, features.drop(columns=[c for c in base.columns if c in features], errors="ignore")], axis=1)


def validate(frame: pd.DataFrame, features: list[str] | None) -> Validated:
    """Keep numeric features only; drop rows with a missing or non-finite label or feature value."""
    meta = ["row_id", TIME, LABEL]
    if features is not None:
        absent = [f for f in features if f not in frame.columns]
        if absent and len(frame):
            raise DataError(f"configured feature(s) absent from every row: {', '.join(absent)}")
        columns = features
    else:
        columns = [c for c in frame.columns if c not in meta]
    numeric = {c: pd.to_numeric(frame[c], errors="coerce") for c in columns}
    if features is None:  # inferred: a column that is mostly text is a segment, not a feature
        numeric = {c: v for c, v in numeric.items() if v.notna().mean() >= 0.5 or frame[c].isna().all()}
    out = pd.concat([frame[meta].reset_index(drop=True), pd.DataFrame(numeric).reset_index(drop=True)], axis=1)
    values = out.drop(columns=["row_id", TIME]).to_numpy(dtype=float)
    finite = np.isfinite(values)
    problems = {
        name: int((~finite[:, i]).sum()) for i, name in enumerate(out.columns.drop(["row_id", TIME])) if (~finite[:, i]).any()
    }
    keep = finite.all(axis=1)
    return Validated(out[keep].reset_index(drop=True), int((~keep).sum()), problems)


def split(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, Holdout]:
    """Time-ordered split: every training row is older than every holdout row (train < cutoff <= holdout)."""
    frame = frame.sort_values([TIME, "row_id"], kind="stable").reset_index(drop=True)
    n_test = max(1, math.ceil(len(frame) * test_fraction))
    if len(frame) - n_test < 1:
        raise DataError(f"{len(frame)} rows cannot be split into training and holdout")
    cutoff = frame[TIME].iloc[len(frame) - n_test]
    train, test = frame[frame[TIME] < cutoff], frame[frame[TIME] >= cutoff]
    if train.empty:
        raise DataError("all rows share one timestamp; a time-ordered holdout is impossible")
    digest = hashlib.sha256()
    for row_id, label in zip(test["row_id"], test[LABEL], strict=True):
        digest.update(f"{row_id}:{label!r};".encode())
    holdout = Holdout(test[TIME].iloc[0], test[TIME].iloc[-1], len(test), digest.hexdigest())
    return train.reset_index(drop=True), test.reset_index(drop=True), holdout


def features_only(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["row_id", TIME], errors="ignore")
