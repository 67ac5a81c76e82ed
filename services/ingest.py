"""Bring your own data: a CSV or Parquet file into a model's labelled observations.

Read in chunks (never the whole file in memory); each row becomes a purchase-like event that goes
through the producers' own rules, `events.parse` then `events.store` (so the production schema, the
limits and the database's refusals are checked once, in one place). A rejected row is reported by its
line number (CSV: the header is line 1; Parquet: the data row number, from 1).

Idempotent: each row's event id is its `id` column's value, else a hash of its content (model,
features, label, time), so a re-run of the same file, or a line repeated in it, stores nothing twice.
Rows ask for no retrain each: the caller gets at most one coalesced request for the whole file.

Typing: a CSV cell is a number when it reads as one, a boolean when it is true/false (any case), empty
when missing, else text (a category). Parquet columns keep their own types.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from retrainer.config import Settings
from retrainer.db.records import Trigger
from retrainer.services import events, retrain_requests
from retrainer.services.controls import Suppressed
from retrainer.services.errors import InvalidEvent
from retrainer.services.retrain_requests import Enqueue

CHUNK_ROWS = 5_000  # rows per read, parse and INSERT round (events.MAX_BATCH caps a store at 10,000)
SHOW_REJECTED = 20  # rejected rows kept with their reason; the rest are counted
_MISSING = object()


class IngestError(ValueError):
    """The file cannot be ingested at all (missing, empty, no label column, no reader): one line."""


@dataclass
class Report:
    file: str
    rows: int = 0
    stored: int = 0
    duplicates: int = 0  # already stored (a re-run) or repeated in the file
    rejected_count: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), the first SHOW_REJECTED
    enqueue: Enqueue | None = None  # the one retrain to send after the caller's commit
    suppressed: str | None = None  # why no retrain was asked for (model paused, budget spent)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "rows": self.rows, "stored": self.stored, "duplicates": self.duplicates,
                "rejected_count": self.rejected_count,
                "rejected": [{"line": line, "error": why} for line, why in self.rejected],
                "retrain_request": self.enqueue.request_id if self.enqueue else None,
                "retrain_suppressed": self.suppressed}


def ingest(session: Session, settings: Settings, model: str, path: Path, label: str, time: str | None = None,
           id_column: str | None = None, retrain: bool = True, chunk_rows: int = CHUNK_ROWS,
           progress: Callable[[Report], None] | None = None) -> Report:
    """Store the file's rows as observations of `model`, committing chunk by chunk (a re-run after a
    crash stores only what is missing). With `retrain`, one coalesced retrain request for the rows
    stored, returned in `enqueue` for the caller to send once this session committed."""
    settings.model(model)  # UnknownModel names it
    report = Report(str(path))
    names = {"value": label, "occurred_at": time, "event_id": id_column}
    for first_line, chunk in _chunks(path, chunk_rows):
        if report.rows == 0:
            _check_columns(path, chunk, label, time, id_column)
        batch, lines = [], []
        for offset, payload in enumerate(_payloads(model, chunk, label, time, id_column)):
            try:
                batch.append(events.parse(payload))
                lines.append(first_line + offset)
            except InvalidEvent as exc:
                _reject(report, first_line + offset, _renamed(str(exc), names))
        report.rows += len(chunk)
        if batch:
            stored = events.store(session, settings, batch, source="ingest", coalesce=False)
            report.stored += stored.stored
            report.duplicates += stored.duplicates
            for index, why in stored.rejected:
                _reject(report, lines[index], why)
        session.commit()
        if progress is not None:
            progress(report)
    if report.rows == 0:
        raise IngestError(f"{path}: no data rows (a header line, then one row per observation)")
    report.rejected.sort()
    if retrain and report.stored:
        job = retrain_requests.coalesce(session, settings, model, report.stored, Trigger.NEW_SAMPLES,
                                        requested_by="ingest")
        if isinstance(job, Suppressed):
            report.suppressed = job.reason
        else:
            report.enqueue = job
    return report


def count_rows(path: Path) -> int | None:
    """The file's data rows, for a progress bar: a Parquet file's metadata, a CSV's line breaks (a
    quoted field spanning lines counts twice: an estimate, at disk speed). None when unknown."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        with path.open("rb") as f:
            lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
            f.seek(max(0, f.tell() - 1))
            unterminated = f.read(1) not in (b"\n", b"")
        return max(0, lines + unterminated - 1)  # less the header
    except (ImportError, OSError):
        return None


def _reject(report: Report, line: int, why: str) -> None:
    report.rejected_count += 1
    if len(report.rejected) < SHOW_REJECTED:
        report.rejected.append((line, why))


def _renamed(message: str, names: dict[str, str | None]) -> str:
    """An event's field in a message as the file names it: "value: ..." -> "churned (label): ..."."""
    for field_, column in names.items():
        if column and message.startswith(f"{field_}:"):
            role = {"value": "label", "occurred_at": "time", "event_id": "id"}[field_]
            return f"{column} ({role}):" + message[len(field_) + 1:]
    return message


def _check_columns(path: Path, chunk: pd.DataFrame, label: str, time: str | None, id_column: str | None) -> None:
    for option, column in (("--label", label), ("--time", time), ("--id", id_column)):
        if column is not None and column not in chunk.columns:
            columns = ", ".join(map(str, chunk.columns))
            raise IngestError(f"{path}: no column {column!r} ({option}); its columns: {columns}")


# --- reading -------------------------------------------------------------------------------------

def _chunks(path: Path, rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """(line number of the chunk's first row, the chunk) for a .csv or .parquet file."""
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_chunks(path, rows)
    elif suffix in (".csv", ".txt"):
        yield from _csv_chunks(path, rows)
    else:
        raise IngestError(f"{path}: unknown file type {suffix or '(none)'}; give a .csv or .parquet file")


def _csv_chunks(path: Path, rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    # Every cell as text (dtype=str, nothing read as NaN): the same cell is typed the same way in every
    # chunk (pandas would type a column per chunk), so a row's content hash never depends on its chunk.
    line = 2  # the header is line 1
    try:
        reader = pd.read_csv(path, chunksize=rows, dtype=str, keep_default_na=False, skip_blank_lines=True)
        for chunk in reader:
            yield line, chunk.apply(_typed_cells)
            line += len(chunk)
    except pd.errors.EmptyDataError:
        raise IngestError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: not a readable CSV file ({str(exc).strip().splitlines()[0][:200]})") from None


def _typed_cells(column: pd.Series) -> pd.Series:
    """A CSV column of text as Python values: float, bool, str, or _MISSING for an empty cell."""
    text = column.str.strip()
    number = pd.to_numeric(text, errors="coerce")
    lower = text.str.lower()
    out = pd.Series(text.to_numpy(dtype=object), index=column.index, dtype=object)
    is_number = number.notna() | lower.isin(["nan", "inf", "+inf", "-inf", "infinity", "-infinity"])
    out[is_number] = number.where(number.notna(), lower.map(_special))[is_number].astype(float).tolist()
    out[lower == "true"] = True
    out[lower == "false"] = False
    out[text == ""] = _MISSING
    return out


def _special(text: str) -> float:
    try:
        return float(text)  # nan, inf: kept as numbers, so validation names them (not a finite number)
    except ValueError:
        return float("nan")


def _parquet_chunks(path: Path, rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise IngestError("reading Parquet needs the package `pyarrow`: pip install pyarrow") from None
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=rows)
        line = 1
        for batch in batches:
            frame = batch.to_pandas()
            yield line, frame.astype(object).where(frame.notna(), _MISSING)
            line += len(frame)
    except OSError as exc:
        raise IngestError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:200]})") from None


# --- rows into events ------------------------------------------------------------------------------

def _payloads(model: str, chunk: pd.DataFrame, label: str, time: str | None,
              id_column: str | None) -> Iterator[dict[str, Any]]:
    meta = {label, time, id_column} - {None}
    feature_columns = [c for c in chunk.columns if c not in meta]
    columns = {c: chunk[c].tolist() for c in chunk.columns}
    for i in range(len(chunk)):
        features = {str(c): _plain(columns[c][i]) for c in feature_columns if columns[c][i] is not _MISSING}
        value = _plain(columns[label][i])
        occurred_at = _plain(columns[time][i]) if time else None
        payload: dict[str, Any] = {"type": "purchase", "model": model, "features": features,
                                   "value": None if value is _MISSING else value}
        if occurred_at is not None and occurred_at is not _MISSING:
            payload["occurred_at"] = occurred_at
        if id_column:
            given = columns[id_column][i]
            payload["event_id"] = "" if given is _MISSING else _id_text(given)  # empty: refused, named
        else:
            payload["event_id"] = _content_id(model, features, payload["value"], payload.get("occurred_at"))
        yield payload


def _plain(value: Any) -> Any:
    """A NumPy or pandas scalar as the Python value JSON holds (a timestamp as a datetime)."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _id_text(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a CSV id of 17 is "17", not "17.0"
    return value if isinstance(value, str) else str(value)


def _content_id(model: str, features: dict[str, Any], value: Any, at: Any) -> str:
    """The same row content always gets the same id, so a re-run or a repeated line stores nothing new."""
    text = json.dumps([model, features, value, at], sort_keys=True, default=str, ensure_ascii=False)
    return "ingest-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]
