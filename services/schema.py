"""A model version's feature schema: which features it reads, in order, each one's type (numeric,
categorical, boolean), the categories and ranges seen in training, and which keys were left out and why.

Where a run's schema comes from (`resolve`): a configured one wins (typed in the configuration, or a
list of names typed from the production schema, else from the rows); else the production version's
recorded schema; else one inferred from the rows. A key the rows carry that the schema lacks is never
used silently nor dropped silently: it is counted and named in the run's result and decision.

An inferred schema does NOT adopt new keys on later runs: once a version is in production its schema
is the model's input contract (ingestion checks rows against it, predictions must carry it), so
widening it is a person's call, made by adding the key to `features`.

`apply` turns rows into X as the families expect it (models/base.py): float64, pandas category and
bool columns, with a per-column count of the rows whose value is missing or of the wrong type.
Columnar: a type test per column (`map(type)`), never a Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer.db.records import ModelVersion
from retrainer.models.base import DataError, FeatureType
from retrainer.services import validation

# An inferred schema takes a key only when at least this share of rows carries it, and this share of
# those values has one type: the rows that lack it or carry another type are dropped (counted), so
# taking a key never costs more than a few rows. A key under the bar is left out, with the reason.
TAKE_SHARE = 0.95
_NUMBER_TYPES = (int, float, np.integer, np.floating)
MISSING, NUMBER, BOOLEAN, STRING, OTHER = range(5)  # a value's kind, as _kinds codes it
_BOOL_TYPES = (bool, np.bool_)
_KIND_NAMES = {FeatureType.NUMERIC: "a number", FeatureType.BOOLEAN: "a boolean", FeatureType.CATEGORICAL: "a string"}


@dataclass(frozen=True)
class Feature:
    name: str
    type: FeatureType
    categories: tuple[str, ...] = ()  # categorical: seen in training, sorted
    range: tuple[float, float] | None = None  # numeric: min and max seen in training


@dataclass(frozen=True)
class FeatureSchema:
    features: tuple[Feature, ...]
    source: str = "inferred"  # configured | production | inferred
    left_out: dict[str, str] = field(default_factory=dict)  # key -> why it is not a feature

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def type_of(self, name: str) -> FeatureType | None:
        return next((f.type for f in self.features if f.name == name), None)

    def to_json(self) -> dict[str, Any]:
        def one(f: Feature) -> dict[str, Any]:
            out: dict[str, Any] = {"name": f.name, "type": f.type.value}
            if f.type is FeatureType.CATEGORICAL:
                out["categories"] = list(f.categories)
            if f.range is not None:
                out["range"] = list(f.range)
            return out

        return {"features": [one(f) for f in self.features], "source": self.source, "left_out": dict(self.left_out)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSchema:
        features = tuple(
            Feature(f["name"], FeatureType(f["type"]), tuple(f.get("categories") or ()),
                    tuple(f["range"]) if f.get("range") else None)  # type: ignore[arg-type]
            for f in data.get("features", [])
        )
        return cls(features, data.get("source", "inferred"), dict(data.get("left_out") or {}))

    def apply(self, frame: pd.DataFrame) -> Applied:
        """X typed as the schema says (a categorical column's categories: training's, then new ones
        sorted), the rows to drop (a feature missing or of the wrong type) and their count per column."""
        columns: dict[str, Any] = {}
        bad = np.zeros(len(frame), dtype=bool)
        problems: dict[str, int] = {}
        for f in self.features:
            values, ok = _typed(frame[f.name] if f.name in frame.columns else None, f, len(frame))
            columns[f.name] = values
            if n := int((~ok).sum()):
                problems[f.name] = n
            bad |= ~ok
        return Applied(pd.DataFrame(columns, index=frame.index), bad, problems)

    def observed(self, X: pd.DataFrame) -> FeatureSchema:
        """This schema with the categories and ranges of X (the rows a version is trained on)."""
        features = []
        for f in self.features:
            column = X[f.name]
            if f.type is FeatureType.CATEGORICAL:
                f = Feature(f.name, f.type, tuple(sorted(str(c) for c in column.dropna().unique())))
            elif f.type is FeatureType.NUMERIC and len(column):
                f = Feature(f.name, f.type, range=(float(column.min()), float(column.max())))
            features.append(f)
        return FeatureSchema(tuple(features), self.source, self.left_out)

    def check(self, features: dict[str, Any]) -> str | None:
        """Why one row's features do not fit this schema (the first problem, naming the feature), or None."""
        for f in self.features:
            value = features.get(f.name)
            if value is None:
                return f"features.{validation.label(f.name)}: missing (the production schema needs it)"
            if not _fits(value, f.type):
                return (f"features.{validation.label(f.name)}: expected {_KIND_NAMES[f.type]} ({f.type.value}), "
                        f"got {validation.kind(value)}")
        return None


@dataclass(frozen=True)
class Applied:
    X: pd.DataFrame
    bad: np.ndarray  # per row: some feature missing or of the wrong type
    problems: dict[str, int]


def _fits(value: Any, kind: FeatureType) -> bool:
    if kind is FeatureType.BOOLEAN:
        return isinstance(value, _BOOL_TYPES)
    if kind is FeatureType.CATEGORICAL:
        return isinstance(value, str)
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, _BOOL_TYPES)


def _typed(column: pd.Series | None, f: Feature, rows: int) -> tuple[Any, np.ndarray]:
    """One feature column as X holds it, and per row whether its value is present and of the type."""
    if column is None:
        empty = {FeatureType.NUMERIC: np.full(rows, np.nan), FeatureType.BOOLEAN: np.zeros(rows, dtype=bool),
                 FeatureType.CATEGORICAL: pd.Categorical([None] * rows, categories=list(f.categories))}
        return empty[f.type], np.zeros(rows, dtype=bool)
    kinds = _kinds(column)
    if f.type is FeatureType.NUMERIC:
        ok = kinds == NUMBER
        values = _as_float(column) if column.dtype == object else column.to_numpy(dtype=float)
        values = np.where(ok, values, np.nan)
        with np.errstate(invalid="ignore"):
            ok = ok & np.isfinite(values) & (np.abs(values) <= validation.MAX_ABS)
        return values, ok
    if f.type is FeatureType.BOOLEAN:
        ok = kinds == BOOLEAN
        return np.where(ok, column.to_numpy(dtype=object, na_value=False), False).astype(bool), ok
    ok = kinds == STRING
    text = column.where(ok)
    seen = set(text.dropna().unique()) - set(f.categories)
    return pd.Categorical(text, categories=[*f.categories, *sorted(seen)]), ok


def _kinds(column: pd.Series) -> np.ndarray:
    """Per value, its kind code (MISSING, NUMBER, BOOLEAN, STRING, OTHER). A typed column answers at
    once; an object column (JSON's mixed values) costs one `map(type)`."""
    dtype, missing = column.dtype, column.isna().to_numpy()
    if pd.api.types.is_bool_dtype(dtype):  # numpy bool, or pandas "boolean" with <NA> (a columnar load)
        return np.where(missing, MISSING, BOOLEAN).astype(np.int8)
    if pd.api.types.is_numeric_dtype(dtype):
        return np.where(missing, MISSING, NUMBER).astype(np.int8)
    if isinstance(dtype, pd.CategoricalDtype) or (pd.api.types.is_string_dtype(dtype) and dtype != object):
        return np.where(missing, MISSING, STRING).astype(np.int8)
    types = column.map(type)
    out = np.full(len(column), OTHER, dtype=np.int8)
    out[types.isin([int, float, np.int64, np.float64]).to_numpy()] = NUMBER
    out[types.isin([bool, np.bool_]).to_numpy()] = BOOLEAN
    out[(types == str).to_numpy()] = STRING
    out[missing] = MISSING  # None and NaN (a float) alike
    return out


def _as_float(column: pd.Series) -> np.ndarray:
    """Numbers as float64 (NaN where absent); an integer too large for a float is +-inf (then dropped)."""
    try:
        return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    except (OverflowError, TypeError, ValueError):
        return column.map(_one_float).to_numpy(dtype=float)


def _one_float(value: Any) -> float:
    if value is None or isinstance(value, _BOOL_TYPES) or not isinstance(value, _NUMBER_TYPES):
        return np.nan
    try:
        return float(value)
    except OverflowError:
        return np.inf if value > 0 else -np.inf


# --- where a run's schema comes from ---------------------------------------------------------------

def infer(frame: pd.DataFrame, names: list[str] | None = None) -> FeatureSchema:
    """A schema from the rows: a column of numbers is numeric, of booleans boolean, of strings
    categorical. A mixed column takes the type most of its values have; its other values are then
    wrong-typed (their rows dropped and counted). Without `names` (every key the rows carry), a key is
    left out when under TAKE_SHARE of the rows carry it or under TAKE_SHARE of its values share a type.
    With `names` (configured), every name is taken, whatever its share."""
    meta = {"row_id", "event_time", "label"}
    keys = names if names is not None else [c for c in frame.columns if c not in meta]
    features, left_out = [], {}
    for name in keys:
        if name not in frame.columns:
            continue
        counts = np.bincount(_kinds(frame[name]), minlength=5)
        present = int(len(frame) - counts[MISSING])
        typed = {NUMBER: FeatureType.NUMERIC, BOOLEAN: FeatureType.BOOLEAN, STRING: FeatureType.CATEGORICAL}
        top_code = max(typed, key=lambda code: counts[code])  # ties: number, then boolean, then string
        top = int(counts[top_code])
        if top == 0:
            if names is None:
                left_out[name] = "no row carries a number, boolean or string for it"
                continue
            kind = FeatureType.NUMERIC
        else:
            kind = typed[top_code]
        if names is None and len(frame):
            if present < TAKE_SHARE * len(frame):
                left_out[name] = f"present in {present / len(frame):.0%} of rows; a feature needs {TAKE_SHARE:.0%}"
                continue
            if top < TAKE_SHARE * present:
                left_out[name] = (f"mixed types ({top / present:.0%} {kind.value}); "
                                  f"a feature needs {TAKE_SHARE:.0%} of one type")
                continue
        features.append(Feature(name, kind))
    return FeatureSchema(tuple(features), "configured" if names is not None else "inferred", left_out)


def from_config(features: list[str] | dict[str, str], frame: pd.DataFrame,
                production: FeatureSchema | None = None) -> FeatureSchema:
    """The configured features: a mapping name -> type as written; a list of names typed as the
    production schema has them, else from the rows. A name no row carries is a DataError."""
    names = list(features)
    absent = [n for n in names if n not in frame.columns]
    if absent and len(frame):
        raise DataError(f"configured feature(s) absent from every row: {', '.join(absent)}")
    if isinstance(features, dict):
        known = {f.name: f for f in production.features} if production else {}
        return FeatureSchema(tuple(
            Feature(n, FeatureType(t), known[n].categories if n in known and known[n].type == t else ())
            for n, t in features.items()), "configured")
    inferred = {f.name: f for f in infer(frame, names).features}
    prior = {f.name: f for f in production.features} if production else {}
    return FeatureSchema(tuple(prior.get(n) or inferred.get(n) or Feature(n, FeatureType.NUMERIC) for n in names),
                         "configured")


def known(configured: list[str] | dict[str, str] | None, production: FeatureSchema | None) -> FeatureSchema | None:
    """The features a run will read and their types when they are known before any row is read
    (a typed configuration, or names the production schema types, or the production schema), so
    the rows can be loaded column by column; None when the types must be inferred from the rows."""
    prior = {f.name: f for f in production.features} if production else {}
    if isinstance(configured, dict):
        return FeatureSchema(tuple(Feature(n, FeatureType(t)) for n, t in configured.items()), "configured")
    if configured is not None:
        return FeatureSchema(tuple(prior[n] for n in configured), "configured") if set(configured) <= set(prior) else None
    return FeatureSchema(production.features, "production") if production else None


def resolve(frame: pd.DataFrame, configured: list[str] | dict[str, str] | None,
            production: FeatureSchema | None) -> FeatureSchema:
    """The schema a run reads its rows through (see the module docstring for the order)."""
    if configured is not None:
        return from_config(configured, frame, production)
    if production is not None:
        return FeatureSchema(production.features, "production")
    return infer(frame)


def production(session: Session, model: str) -> FeatureSchema | None:
    """The production version's recorded schema; None without a production version or a recorded schema."""
    data = session.scalar(sa.select(ModelVersion.feature_schema)
                          .where(ModelVersion.model == model, ModelVersion.is_production))
    return FeatureSchema.from_json(data) if data else None
