"""The columnar load (services/columnar.py) with the compacted blocks (services/blocks.py) read first.

Rows come from the model's blocks that still hold exactly their id range and could hold one of the
newest `max_rows` rows (by max event time), and from observations for every id no such block covers
(the tail, and any range a delete or a late commit changed), through columnar.read. The newest
`max_rows` of the union inside the event window are kept, as one query would: the same rows, labels
overlaid from the rows updated since their block was built, typed the same way. With no block yet,
this is columnar.load.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import Observation, ObservationBlock
from retrainer.models.base import FeatureType
from retrainer.services import blocks, columnar, validation
from retrainer.services.schema import FeatureSchema

# An UPDATE is stamped when it runs but seen when it commits: overlay rows stamped this long before
# their block was built too, so a transaction open across a compaction is still seen.
OVERLAY_MARGIN = timedelta(days=1)


def load(session: Session, model: str, max_rows: int, used: FeatureSchema,
         row_id: str, time: str, label: str) -> pd.DataFrame:
    metas = session.execute(sa.select(ObservationBlock.id, ObservationBlock.first_id, ObservationBlock.last_id,
                                      ObservationBlock.rows, ObservationBlock.min_time, ObservationBlock.max_time,
                                      ObservationBlock.built_at)
                            .where(ObservationBlock.model == model).order_by(ObservationBlock.first_id)).all()
    if not metas:
        return columnar.load(session, model, max_rows, used, row_id, time, label)
    stale = set(blocks.stale(session, model))
    good = [m for m in metas if m.id not in stale]
    earliest, latest = validation.EARLIEST, clock.now() + validation.MAX_AHEAD
    wanted = _wanted(good, max_rows, earliest, latest)
    parts = [_block_part(p, earliest, latest) for p in _payloads(session, [m.id for m in wanted])]
    _overlay(session, model, parts, min((m.built_at for m in wanted), default=None))
    covered = sql.SQL(" OR ").join(sql.SQL("id BETWEEN {} AND {}").format(sql.Literal(m.first_id),
                                                                            sql.Literal(m.last_id)) for m in good)
    raw = columnar.read(session, model, max_rows, used, sql.SQL("NOT ({})").format(covered) if good else sql.SQL("TRUE"))
    if raw is not None:
        parts.append(_tail_part(raw, used))
    return _merge(parts, max_rows, used, row_id, time, label)


def _wanted(good: list[Any], max_rows: int, earliest: Any, latest: Any) -> list[Any]:
    """The blocks that can hold one of the newest `max_rows` rows: a block is skipped when blocks
    wholly inside the window hold at least `max_rows` rows that are all newer than its newest."""
    whole = [m for m in good if m.min_time is not None and m.min_time >= earliest and m.max_time <= latest]
    return [m for m in good if m.max_time is not None
            and sum(o.rows for o in whole if o.min_time > m.max_time) < max_rows]


def _payloads(session: Session, ids: list[int]) -> list[bytes]:
    if not ids:
        return []
    driver = session.connection().connection.driver_connection
    with driver.cursor(binary=True) as cursor:  # type: ignore[union-attr]  (raw bytes, no hex text)
        cursor.execute("SELECT payload FROM observation_blocks WHERE id = ANY(%s) ORDER BY first_id", [ids])
        return [row[0] for row in cursor.fetchall()]


def _block_part(payload: bytes, earliest: Any, latest: Any) -> dict[str, Any]:
    _rows, columns = blocks.decode(payload)
    t = columns["time"][1]
    inside = (t >= _us(earliest)) & (t <= _us(latest))
    keep = None if inside.all() else inside
    pick = (lambda a: a) if keep is None else (lambda a: a[keep])
    return {"id": pick(columns["id"][1]), "time": pick(t), "label": pick(columns["label"][1]).copy(),
            "ok": pick(columns["ok"][1]), "keys": {n[2:]: (k, pick(a), v) for n, (k, a, v) in columns.items()
                                                   if n.startswith("f:")}}


def _tail_part(raw: pd.DataFrame, used: FeatureSchema) -> dict[str, Any]:
    raw = raw.iloc[::-1].reset_index(drop=True)  # oldest first, close to id order for the merge's sort
    return {"id": raw["id"].to_numpy(dtype=np.int64), "time": raw["time"].to_numpy(dtype=np.int64),
            "label": columnar._floats(raw["label"]), "ok": raw["rest"].notna().to_numpy(), "raw": raw}


def _us(at: Any) -> int:
    return int(pd.Timestamp(at).value // 1000)


def _overlay(session: Session, model: str, parts: list[dict[str, Any]], since: Any) -> None:
    """Labels rewritten after their block was built (a corrected outcome)."""
    if since is None:
        return
    updated = session.execute(sa.select(Observation.id, Observation.label).where(
        Observation.model == model, Observation.updated_at.is_not(None),
        Observation.updated_at >= since - OVERLAY_MARGIN)).all()
    if not updated:
        return
    ids = np.array([u[0] for u in updated], dtype=np.int64)
    labels = np.array([u[1] for u in updated], dtype=float)
    for part in parts:
        at = np.searchsorted(part["id"], ids).clip(0, max(len(part["id"]) - 1, 0))
        hit = (part["id"][at] == ids) if len(part["id"]) else np.zeros(len(ids), dtype=bool)
        part["label"][at[hit]] = labels[hit]


def _merge(parts: list[dict[str, Any]], max_rows: int, used: FeatureSchema,
           row_id: str, time: str, label: str) -> pd.DataFrame:
    ids = np.concatenate([p["id"] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    times = np.concatenate([p["time"] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    order = np.arange(len(ids)) if np.all(ids[1:] > ids[:-1]) else np.argsort(ids, kind="stable")
    order = order[np.argsort(times[order], kind="stable")][-max_rows:]  # oldest first by (time, id)
    ok = np.concatenate([p["ok"] for p in parts])[order] if parts else np.zeros(0, dtype=bool)
    selected = order[ok]
    frame = pd.DataFrame({row_id: ids[selected],
                          time: pd.to_datetime(times[selected], unit="us", utc=True),
                          label: np.concatenate([p["label"] for p in parts])[selected] if parts else []})
    chosen, start = [], 0
    for p in parts:  # per part, which of its rows made it (for the unused-key counts)
        mask = np.zeros(len(p["id"]), dtype=bool)
        inside = selected[(selected >= start) & (selected < start + len(p["id"]))] - start
        mask[inside] = True
        chosen.append(mask)
        start += len(p["id"])
    for i, f in enumerate(used.features):
        values, carried = zip(*(_feature(p, i, f.name, f.type) for p in parts), strict=True) if parts else ((), ())
        if len(selected) and not any(c[m].any() for c, m in zip(carried, chosen, strict=True)):
            continue  # no row carries the key: absent, as in columnar.load
        frame[f.name] = _finish(np.concatenate(values)[selected], f.type)
    frame.attrs["problems"] = {"features": int((~ok).sum())} if (~ok).any() else {}
    frame.attrs["unused"] = _unused(parts, chosen, set(used.names))
    return frame


def _feature(part: dict[str, Any], i: int, name: str, kind: FeatureType) -> tuple[np.ndarray, np.ndarray]:
    """One part's values of a schema feature (float64; booleans 1/0/NaN; categories as objects) and
    whether each row carries the key."""
    n = len(part["id"])
    if "raw" in part:
        column = part["raw"][f"f{i}"]
        carried = column.notna().to_numpy()
        typed = columnar._typed(column, kind)
        if kind is FeatureType.BOOLEAN:
            return typed.to_numpy(dtype=float, na_value=np.nan), carried
        return (typed if kind is FeatureType.NUMERIC else np.asarray(typed, dtype=object)), carried
    stored, array, values = part["keys"].get(name, (None, None, None))
    if stored is None:
        return _missing(n, kind), np.zeros(n, dtype=bool)
    carried = ~np.isnan(array) if stored == "float" else array >= 0
    if stored == "json":  # mixed JSON types: typed from their JSON text exactly as columnar.load does
        text = np.array([*values, None], dtype=object)[array]
        return _feature({"id": part["id"], "raw": pd.DataFrame({f"f{i}": text})}, i, name, kind)[0], carried
    if kind is FeatureType.NUMERIC and stored == "float":
        return array, carried
    if kind is FeatureType.BOOLEAN and stored == "bool":
        return np.where(array < 0, np.nan, array.astype(float)), carried
    if kind is FeatureType.CATEGORICAL and stored == "string":
        return np.array([*values, None], dtype=object)[array], carried
    return _missing(n, kind), carried  # a value of another type than the schema's is missing


def _missing(n: int, kind: FeatureType) -> np.ndarray:
    return np.full(n, None, dtype=object) if kind is FeatureType.CATEGORICAL else np.full(n, np.nan)


def _finish(values: np.ndarray, kind: FeatureType) -> Any:
    if kind is FeatureType.NUMERIC:
        return values.astype(float, copy=False)
    if kind is FeatureType.BOOLEAN:
        return pd.arrays.BooleanArray(values == 1, np.isnan(values))
    return pd.Categorical(values)


def _unused(parts: list[dict[str, Any]], chosen: list[np.ndarray], names: set[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p, mask in zip(parts, chosen, strict=True):
        if "raw" in p:
            found = columnar._unused(p["raw"]["rest"][mask])
        else:
            found = {k: int(((~np.isnan(a)) if s == "float" else (a >= 0))[mask].sum())
                     for k, (s, a, _) in p["keys"].items() if k not in names}
        for k, n in found.items():
            if n:
                counts[k] = counts.get(k, 0) + n
    return counts
