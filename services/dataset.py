"""Training data: load the most recent labelled rows, validate them, split them by time."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import Observation
from retrainer.models.base import DataError
from retrainer.services import block_load, columnar, schema, validation
from retrainer.services.schema import FeatureSchema

LABEL = "label"  # the frame column that holds the target
TIME = "event_time"  # the frame column that orders rows in time
META = ["row_id", TIME, LABEL]  # never features


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
    schema: FeatureSchema  # what the rows were read through
    unused: dict[str, int]  # keys the rows carry that the schema lacks -> how many rows carry them

    def unused_note(self) -> str:
        """The sentence a run's result and decision carry when rows bring keys the schema does not use."""
        if not self.unused:
            return ""
        return (f"new feature(s) seen, not used: {', '.join(sorted(self.unused))}; "
                "add them to `features` to use them")


def load(session: Session, model: str, max_rows: int, features: FeatureSchema | None = None) -> pd.DataFrame:
    """The newest `max_rows` observations, oldest first, features expanded to columns.

    Rows whose event time lies outside the window events are accepted in (validation.EARLIEST ..
    now + MAX_AHEAD) are left out in SQL: PostgreSQL stores year 10000, which no Python datetime can
    hold. How many were left out, and rows whose features could not be decoded, are in
    `frame.attrs["problems"]`, which `validate` adds to its count.

    With the run's schema known beforehand (`features`) and on PostgreSQL, the rows are read column by
    column (services/columnar.py): only the schema's features, typed, and the other keys counted in
    `frame.attrs["unused"]`. Otherwise every key is a column of decoded JSON values, for `schema.infer`."""
    in_window, outside_window = _window(session)
    outside = session.scalar(sa.select(sa.func.count()).where(Observation.model == model, outside_window))
    problems = {"event_time": outside} if outside else {}
    if features is not None and columnar.usable(session):
        # compacted blocks first (services/blocks.py), the JSONB for the ids they do not cover
        frame = block_load.load(session, model, max_rows, features, "row_id", TIME, LABEL)
        frame.attrs["problems"] = problems | frame.attrs["problems"]
        return frame
    # Features come back as JSON text and are decoded in ONE json.loads of the whole column:
    # decoding row by row was 75 % of a 100k-row retrain (benchmarks/README.md, retrain_overhead).
    rows = session.execute(
        sa.select(Observation.id, Observation.event_time, Observation.label, sa.cast(Observation.features, sa.Text))
        .where(Observation.model == model, in_window)
        .order_by(Observation.event_time.desc(), Observation.id.desc())
        .limit(max_rows)
    ).all()
    if not rows:
        frame = pd.DataFrame(columns=["row_id", TIME, LABEL])
        frame.attrs["problems"] = problems
        return frame
    rows.reverse()
    ids, times, labels, texts = zip(*rows, strict=True)
    decoded, undecodable = _decode_features(texts)
    features_frame = pd.DataFrame.from_records(decoded)
    base = pd.DataFrame({"row_id": ids, TIME: times, LABEL: labels})
    frame = pd.concat([base, features_frame.drop(columns=[c for c in base.columns if c in features_frame],
                                                 errors="ignore")], axis=1)
    if undecodable:
        frame = frame.drop(index=undecodable).reset_index(drop=True)
        problems["features"] = len(undecodable)
    frame.attrs["problems"] = problems
    return frame


def _window(session: Session) -> tuple[sa.ColumnElement[bool], sa.ColumnElement[bool]]:
    """SQL for "event_time inside the window events are accepted in", and for its opposite."""
    earliest, latest = validation.EARLIEST, clock.now() + validation.MAX_AHEAD
    column = Observation.event_time
    if session.get_bind().dialect.name != "sqlite":
        return column.between(earliest, latest), sa.or_(column < earliest, column > latest)  # both use the index
    # SQLite holds whatever a direct INSERT wrote: datetime() is NULL for text it cannot read (and past
    # year 9999), and the text it gives back compares in time order.
    bounds = [f"{b:%Y-%m-%d %H:%M:%S}" for b in (earliest, latest)]
    readable = sa.func.datetime(sa.type_coerce(column, sa.Text)).between(*bounds)
    inside = sa.func.coalesce(sa.and_(sa.func.typeof(column) == "text", readable), False).is_(True)
    return inside, ~inside


def _decode_features(texts: tuple[str | None, ...]) -> tuple[list[dict[str, Any]], list[int]]:
    """Every row's features, and the positions of rows whose features are not a JSON object (NULL,
    not JSON, an integer of more than 4,300 digits, nested beyond the decoder): those get {}."""
    try:
        decoded = json.loads("[" + ",".join(texts) + "]")  # type: ignore[arg-type]  (None: TypeError)
    except (TypeError, ValueError, RecursionError):
        decoded = None  # some row is not JSON: find which, row by row, below
    if decoded is not None and all(type(d) is dict for d in decoded):
        return decoded, []
    decoded, bad = [], []
    for i, text in enumerate(texts):
        try:
            one = json.loads(text)  # type: ignore[arg-type]
        except (TypeError, ValueError, RecursionError):
            one = None
        if type(one) is not dict:
            bad.append(i)
            one = {}
        decoded.append(one)
    return decoded, bad


def validate(frame: pd.DataFrame, features: FeatureSchema | list[str] | dict[str, str] | None = None,
             needs_time: bool = False) -> Validated:
    """The rows typed through a feature schema (given, or resolved from the configured `features` and
    the rows: services/schema.py): numeric float64, categorical pandas category, boolean bool. A row
    with a missing, wrong-typed, non-finite or out-of-range (|x| > validation.MAX_ABS) label or feature
    is dropped, counted per column with the rows `load` left out. Keys the rows carry that the schema
    lacks are counted in `unused`, never silently ignored. No feature at all is only for a family that
    reads the time (`needs_time`)."""
    used = features if isinstance(features, FeatureSchema) else schema.resolve(frame, features, None)
    if not used.features and not needs_time and len(frame):
        why = "; ".join(f"{k}: {v}" for k, v in used.left_out.items())
        raise DataError("no usable feature in the rows" + (f" ({why})" if why else ""))
    typed = used.apply(frame)
    label = _numeric(frame[LABEL]).to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        label_ok = np.isfinite(label) & (np.abs(label) <= validation.MAX_ABS)
    problems = dict(frame.attrs.get("problems", {}))
    for name, bad in ({LABEL: int((~label_ok).sum())} | typed.problems).items():
        if bad:
            problems[name] = problems.get(name, 0) + bad
    keep = label_ok & ~typed.bad
    out = pd.concat([frame[["row_id", TIME]].reset_index(drop=True),
                     pd.DataFrame({LABEL: label}), typed.X.reset_index(drop=True)], axis=1)
    dropped = int((~keep).sum()) + sum(frame.attrs.get("problems", {}).values())
    unused = {c: int(frame[c].notna().sum()) for c in frame.columns if c not in META and c not in used.names}
    unused |= frame.attrs.get("unused", {})  # counted by a columnar load, which reads only the schema's keys
    return Validated(out[keep].reset_index(drop=True), dropped, problems, used, {k: n for k, n in unused.items() if n})


def _numeric(column: pd.Series) -> pd.Series:
    """Numbers as numbers, anything else NaN; an integer too large for a float is +-inf (then dropped)."""
    try:
        return pd.to_numeric(column, errors="coerce")
    except (OverflowError, TypeError, ValueError):
        return column.map(_as_float).astype(float)


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf  # only an int overflows
    except ValueError:
        return math.nan


def split(frame: pd.DataFrame, test_fraction: float,
          after: tuple[datetime, int | None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, Holdout]:
    """Time-ordered split by position in (time, row id) order: every training row comes before every
    holdout row, and the holdout keeps its configured share even when many rows share the cutoff's
    timestamp (a batch sent without `occurred_at`); rows of one timestamp split by row id.

    `after` is the production version's last training row (time, row id): the holdout holds only rows
    after it, so the champion is never judged on rows it was trained on. It may then be smaller than
    its share (few new rows); the promotion policy's min_holdout_rows decides whether that is enough.
    An empty holdout raises DataError."""
    frame = frame.sort_values([TIME, "row_id"], kind="stable").reset_index(drop=True)
    n_test = max(1, math.ceil(len(frame) * test_fraction))
    if len(frame) - n_test < 1:
        raise DataError(f"{len(frame)} rows cannot be split into training and holdout")
    at = len(frame) - n_test
    if after is not None:
        at = max(at, _first_after(frame, *after))
    if at >= len(frame):
        raise DataError(f"no row is newer than the production version's training data (up to {after[0]:%Y-%m-%d %H:%M})"
                        if after is not None else "no rows left for the holdout")
    train, test = frame.iloc[:at], frame.iloc[at:]
    holdout = Holdout(test[TIME].iloc[0], test[TIME].iloc[-1], len(test), _holdout_hash(test))
    return train.reset_index(drop=True), test.reset_index(drop=True), holdout


def _first_after(frame: pd.DataFrame, end: datetime, last_row_id: int | None) -> int:
    """The position of the first row after (end, last_row_id) in the frame's (time, row id) order; without
    a row id (versions trained before it was recorded), after every row at `end`."""
    times = frame[TIME]
    end = pd.Timestamp(end)
    if times.dt.tz is None and end.tzinfo is not None:
        end = end.tz_convert("UTC").tz_localize(None)
    elif times.dt.tz is not None and end.tzinfo is None:
        end = end.tz_localize("UTC")
    later = times > end
    if last_row_id is not None:
        later |= (times == end) & (frame["row_id"] > last_row_id)
    positions = np.flatnonzero(later.to_numpy())
    return int(positions[0]) if len(positions) else len(frame)


def _holdout_hash(test: pd.DataFrame) -> str:
    """sha256 over the holdout's row ids (int64) and labels (float64), little-endian, in row order.

    Version 2: version 1 hashed the text "row_id:repr(label);" row by row, a Python loop (13 ms per
    20k rows, 130 ms per 200k). Only the candidate and champion of one run are compared by it, and
    both are always hashed by the same version."""
    ids = test["row_id"].to_numpy(dtype="<i8")
    labels = test[LABEL].to_numpy(dtype="<f8")
    return hashlib.sha256(b"holdout-v2" + ids.tobytes() + labels.tobytes()).hexdigest()


def features(frame: pd.DataFrame) -> pd.DataFrame:
    """The feature columns, X: everything but the row id, the time and the label."""
    return frame.drop(columns=META, errors="ignore")
