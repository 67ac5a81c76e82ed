"""A labelled CSV as a time-ordered stream: typed feature columns, labels, one time per row.

Cells are typed per column, as the feature schema types them: a column whose every cell reads as a
number is numeric, one of true/false booleans, anything else text (a category). Every feature must be
present on every row (a served prediction has all its inputs). The rows are put in time order (stable:
rows of one time keep the file's order); without a time column, row i is at `start + i * every`.
Problems are one line naming the file, the line (the header is line 1) and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrainer.models.base import Live


class ReplayInputError(ValueError):
    """The file or an option cannot be replayed: one line saying what and where."""


@dataclass(frozen=True)
class Stream:
    features: pd.DataFrame  # typed columns: float64, bool or str (object), in time order
    labels: np.ndarray  # float64
    times: pd.DatetimeIndex  # UTC, non-decreasing, in nanoseconds

    def __len__(self) -> int:
        return len(self.labels)

    def records(self) -> list[dict[str, Any]]:
        """Each row's features as the Python values a logged prediction holds."""
        columns = {name: self.features[name].tolist() for name in self.features.columns}
        return [{name: values[i] for name, values in columns.items()} for i in range(len(self))]


def read(path: Path, label: str, time: str | None, kind: Live, start: datetime, every: timedelta) -> Stream:
    frame = _load(path)
    for option, column in (("--label", label), ("--time", time)):
        if column is not None and column not in frame.columns:
            raise ReplayInputError(f"{path}: no column {column!r} ({option}); its columns: {', '.join(frame.columns)}")
    names = [c for c in frame.columns if c not in (label, time)]
    if not names:
        raise ReplayInputError(f"{path}: no feature column besides the label{' and the time' if time else ''}")
    features = pd.DataFrame({name: _feature(path, name, frame[name]) for name in names})
    labels = _labels(path, label, frame[label], kind)
    if time is None:
        times = pd.DatetimeIndex([pd.Timestamp(start) + i * every for i in range(len(frame))])
    else:
        times = _times(path, time, frame[time])
    times = times.as_unit("ns")  # asi8 in nanoseconds, whatever resolution pandas parsed at
    order = np.argsort(times.asi8, kind="stable")
    return Stream(features.iloc[order].reset_index(drop=True), labels[order], times[order])


def _load(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ReplayInputError(f"{path}: no such file")
    try:  # every cell as text: the column, not pandas' guess per chunk, decides its type
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ReplayInputError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReplayInputError(f"{path}: not a readable CSV file ({str(exc).strip().splitlines()[0][:200]})") from None
    if frame.empty:
        raise ReplayInputError(f"{path}: no data rows (a header line, then one row per observation)")
    return frame.apply(lambda column: column.str.strip())


def _line(row: int) -> int:
    return row + 2  # the header is line 1


def _feature(path: Path, name: str, text: pd.Series) -> pd.Series:
    if (empty := np.flatnonzero((text == "").to_numpy())).size:
        raise ReplayInputError(f"{path} line {_line(empty[0])}: column {name!r} is empty; replay needs every "
                               "feature on every row")
    number = pd.to_numeric(text, errors="coerce")
    if number.notna().all():
        if (bad := np.flatnonzero(~np.isfinite(number.to_numpy()))).size:
            raise ReplayInputError(f"{path} line {_line(bad[0])}: column {name!r}: {text.iloc[bad[0]]!r} is not a "
                                   "finite number")
        return number.astype(float)
    lower = text.str.lower()
    if lower.isin(["true", "false"]).all():
        return lower == "true"
    return text.astype(object)


def _labels(path: Path, label: str, text: pd.Series, kind: Live) -> np.ndarray:
    lower = text.str.lower()
    if kind == Live.CLASSIFICATION:
        text = text.where(~lower.isin(["true", "false"]), (lower == "true").astype(int).astype(str))
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    what = ("a classifier's labels are class numbers 0, 1, ... (or true/false)" if kind == Live.CLASSIFICATION
            else "a regressor's label is a number")
    if (bad := np.flatnonzero(~np.isfinite(values))).size:
        shown = text.iloc[bad[0]]
        raise ReplayInputError(f"{path} line {_line(bad[0])}: label {label!r} is "
                               f"{repr(shown) if shown else 'empty'}; {what}")
    if kind == Live.CLASSIFICATION and (bad := np.flatnonzero((values < 0) | (values != np.round(values)))).size:
        raise ReplayInputError(f"{path} line {_line(bad[0])}: label {label!r} is {text.iloc[bad[0]]!r}; {what}")
    return values


def _times(path: Path, name: str, text: pd.Series) -> pd.DatetimeIndex:
    times = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if (bad := np.flatnonzero(times.isna().to_numpy())).size:
        raise ReplayInputError(f"{path} line {_line(bad[0])}: time {name!r} is {text.iloc[bad[0]]!r}, not an "
                               "ISO-8601 time")
    return pd.DatetimeIndex(times)
