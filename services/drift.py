"""Feature drift, the pure part: a version's reference profile of every feature, built from its
training rows, and the comparison of recent inputs with it. numpy and scipy only; the check that reads
and writes the tables is services/drift_check.py.

A numeric feature's profile is its distribution function as a monotone polyline of (value, cumulative
share) points: the sorted sample itself (a staircase, exact) when it has at most EXACT_POINTS distinct
values, else `QUANTILES` + 1 evenly spaced quantiles plus geometric tails (interpolated between them);
with its mean and standard deviation, its reference-decile bins for PSI with their exact shares, and
`sketch_error`: the normalised Wasserstein distance between the sketch and the rows it came from. By
the triangle inequality a check's normalised Wasserstein statistic is within `sketch_error` of the one
scipy computes on the raw reference, so a verdict can differ from scipy's only when the statistic lies
that close to the threshold (measured: at most 4.2e-4 over benchmarks/drift.py's 50 features of 1M
rows; at 10,000 rows ~7e-4 for a normal feature, ~3e-3 for a log-normal one). The reference is never
read again: about 24 kB of JSON a numeric feature.

A categorical or boolean feature's profile is its category counts (the `MAX_CATEGORIES` - 1 most
frequent by name, the rest together as the "other" bucket).

Statistics, each drifted at >= its threshold (DEFAULT_THRESHOLDS, chosen by the false-alarm
calibration in benchmarks/drift_calibration.py):
  wasserstein  Wasserstein-1 distance / the reference's standard deviation (scipy's
               wasserstein_distance(ref, cur) / ref.std()); PSI is reported beside it
  ks           Kolmogorov-Smirnov D, the largest gap between the two distribution functions (its
               asymptotic p-value beside it, for information: with many rows it flags everything)
  psi          population stability index over the reference deciles (numbers) or the categories,
               shares floored at PSI_FLOOR so an empty bin counts as rare, not impossible
  chi2         Cohen's w = sqrt(sum((p_cur - p_ref)^2 / p_ref)): the chi-squared statistic of the
               current counts against the reference shares divided by their number, so it does not
               grow with the sample (its p-value beside it)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PROFILE_VERSION = 1
QUANTILES = 1000  # pieces of a numeric sketch: 1,001 evenly spaced quantiles ...
TAIL_PER_DECADE = 10  # ... and in each tail 10 a decade from 0.1 down to 1 / rows (heavy tails stay exact)
EXACT_POINTS = QUANTILES // 2  # up to this many distinct values the sorted sample is kept itself
PSI_BINS = 10  # reference deciles
PSI_FLOOR = 1e-4  # an empty bin's share, as Evidently and most PSI write-ups take it
MAX_CATEGORIES = 20  # per categorical feature: 19 named categories + "other"; bounds PSI's noise
NUMERIC_METHODS = ("wasserstein", "ks", "psi")
CATEGORICAL_METHODS = ("psi", "chi2")
THREADS = min(os.cpu_count() or 1, 4)
PARALLEL_VALUES = 2_000_000  # rows x features from which a check spreads its features over THREADS threads
# At the default min_samples (1,000) each keeps a feature's false alarms on data without drift under 2 %
# (benchmarks/drift_calibration.py): wasserstein 0.1 is a mean shift of a tenth of a standard deviation;
# psi 0.1 the usual "moderate shift" line; chi2's w 0.3 Cohen's "medium" effect, about psi 0.1.
DEFAULT_THRESHOLDS: dict[str, float] = {"wasserstein": 0.1, "ks": 0.1, "psi": 0.1, "chi2": 0.3}


# --- the reference profile ------------------------------------------------------------------------

def build_profile(X: pd.DataFrame, types: Mapping[str, str]) -> dict[str, Any]:
    """The profile of every feature in `types` (name -> numeric | categorical | boolean) from the
    training features X, typed as services/schema.py makes them (float64, category, bool)."""
    features: dict[str, Any] = {}
    for name, kind in types.items():
        column = X[name] if name in X.columns else pd.Series([], dtype=float)
        if kind == "numeric":
            values = column.to_numpy(dtype=float, na_value=np.nan)
            features[name] = numeric_profile(values)
        else:
            features[name] = categorical_profile(_labels(column, kind), kind)
    return {"version": PROFILE_VERSION, "rows": len(X), "features": features}


def numeric_profile(values: np.ndarray) -> dict[str, Any]:
    finite = np.isfinite(values)
    ref = np.sort(values[finite])
    n = len(ref)
    out: dict[str, Any] = {"type": "numeric", "count": n, "missing": int(len(values) - n)}
    if n == 0:
        return out
    distinct = np.concatenate([np.flatnonzero(np.diff(ref)), [n - 1]])  # the last index of each value
    if len(distinct) <= EXACT_POINTS:  # the sample itself: a staircase, a vertical step per distinct value
        cum = (distinct + 1) / n
        q = np.repeat(ref[distinct], 2)
        u = np.column_stack([np.concatenate([[0.0], cum[:-1]]), cum]).ravel()
    else:
        u = levels(n)
        q = _quantiles(ref, u)
    out |= {"q": q.tolist(), "u": u.tolist()}
    std = float(ref.std())
    # PSI bins: the distinct reference deciles; a value goes to the first bin whose upper edge is >= it
    edges = np.unique(_quantiles(ref, np.arange(1, PSI_BINS) / PSI_BINS))
    below = np.searchsorted(ref, edges, side="right")
    shares = np.diff(np.concatenate([[0], below, [n]])) / n
    sketch = _sketch(out)
    error = _wasserstein_ks(ref, *sketch)[0]
    return out | {"mean": float(ref.mean()), "std": std, "min": float(ref[0]), "max": float(ref[-1]),
                  "psi_edges": edges.tolist(), "psi_shares": shares.tolist(),
                  "sketch_error": error / std if std > 0 else 0.0}


def _quantiles(ref: np.ndarray, at: np.ndarray) -> np.ndarray:
    """np.quantile's default ('linear': the first is the minimum, the last the maximum) of sorted values,
    without sorting them again."""
    position = at * (len(ref) - 1)
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, len(ref) - 1)
    return ref[lo] + (position - lo) * (ref[hi] - ref[lo])


def categorical_profile(labels: pd.Series, kind: str = "categorical") -> dict[str, Any]:
    """Counts of a categorical (or boolean, as "true"/"false") feature; labels: strings, None where missing."""
    counts = labels.value_counts(dropna=True)
    named = counts.iloc[:MAX_CATEGORIES - 1] if len(counts) > MAX_CATEGORIES else counts
    return {"type": kind, "count": int(counts.sum()), "missing": int(labels.isna().sum()),
            "counts": {str(k): int(v) for k, v in named.items()}, "other": int(counts.sum() - named.sum())}


def _labels(column: pd.Series, kind: str) -> pd.Series:
    """A categorical or boolean column as text labels (booleans "true"/"false"), None where missing
    or of another type: JSON's mixed values are compared, never coerced."""
    def label(v: Any) -> str | None:
        if kind == "boolean":
            return ("true" if v else "false") if isinstance(v, (bool, np.bool_)) else None
        return v if isinstance(v, str) else None

    if kind == "boolean" and pd.api.types.is_bool_dtype(column.dtype) and not column.hasnans:
        return pd.Series(np.where(column.to_numpy(dtype=bool), "true", "false"), index=column.index, dtype=object)
    if kind == "categorical" and (pd.api.types.is_string_dtype(column.dtype) and column.dtype != object or (
            isinstance(column.dtype, pd.CategoricalDtype) and all(isinstance(c, str) for c in column.dtype.categories))):
        return column.astype(object).where(column.notna(), None)  # text already: no per-value test
    return column.map(label).astype(object)


def levels(rows: int) -> np.ndarray:
    """The cumulative shares a sketch of `rows` values keeps: evenly spaced, plus geometric tails."""
    tail = 10.0 ** np.arange(-1.0, math.log10(1 / rows), -1 / TAIL_PER_DECADE)
    return np.unique(np.concatenate([np.linspace(0.0, 1.0, QUANTILES + 1), tail, 1 - tail]))


def _sketch(p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(p["q"], dtype=float), np.asarray(p["u"], dtype=float)


# --- the comparison -------------------------------------------------------------------------------

@dataclass
class Comparison:
    """Per feature: method, statistic, threshold, drifted (None: not compared, see its note)."""

    features: dict[str, dict[str, Any]]
    share_threshold: float
    rows: int
    drifted_share: float | None = None
    drifted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def compared(self) -> list[str]:
        return [n for n, f in self.features.items() if f["drifted"] is not None]

    @property
    def drifted_features(self) -> list[str]:
        return [n for n, f in self.features.items() if f["drifted"]]


def thresholds(numeric: str, categorical: str, numeric_threshold: float | None = None,
               categorical_threshold: float | None = None) -> tuple[float, float]:
    """The thresholds in force: the configured ones, else the methods' defaults."""
    return (numeric_threshold or DEFAULT_THRESHOLDS[numeric], categorical_threshold or DEFAULT_THRESHOLDS[categorical])


def compare(profile: Mapping[str, Any], current: pd.DataFrame, *, numeric: str = "wasserstein",
            categorical: str = "psi", numeric_threshold: float | None = None,
            categorical_threshold: float | None = None, share: float = 0.5, min_samples: int = 1) -> Comparison:
    """Recent inputs (one row each, a column per feature; values of the wrong type, missing or not
    finite are left out of that feature and counted) against a profile. A feature with fewer than
    `min_samples` usable values is not compared (noted); dataset drift when at least `share` of the
    compared features drift."""
    if numeric not in NUMERIC_METHODS or categorical not in CATEGORICAL_METHODS:
        raise ValueError(f"unknown drift method: numeric {numeric!r} (one of {', '.join(NUMERIC_METHODS)}), "
                         f"categorical {categorical!r} (one of {', '.join(CATEGORICAL_METHODS)})")
    num_t, cat_t = thresholds(numeric, categorical, numeric_threshold, categorical_threshold)
    rows = len(current)

    def one(name: str) -> dict[str, Any]:
        ref = profile["features"][name]
        column = current[name] if name in current.columns else None
        if ref["type"] == "numeric":
            entry = _numeric(ref, _numbers(column, rows), numeric, num_t, min_samples)
        else:
            labels = _labels(column, ref["type"]) if column is not None else pd.Series([None] * rows, dtype=object)
            entry = _categorical(ref, labels, categorical, cat_t, min_samples)
        if column is None:
            entry["note"] = f"absent from all {rows} recent inputs; not compared"
        return entry

    names = list(profile["features"])
    # Sorting and the ufuncs release the GIL: large checks use the cores, one feature per thread.
    threads = min(THREADS, len(names)) if rows * len(names) >= PARALLEL_VALUES else 1
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            out = dict(zip(names, pool.map(one, names), strict=True))
    else:
        out = {name: one(name) for name in names}
    result = Comparison(out, share, rows)
    compared = result.compared
    if compared:
        result.drifted_share = len(result.drifted_features) / len(compared)
        result.drifted = result.drifted_share >= share
    if extra := set(current.columns) - set(profile["features"]):
        result.notes.append(not_profiled(extra))
    return result


def not_profiled(keys: set[str]) -> str:
    """The note for input keys the reference profile does not know (the model was not trained on them)."""
    shown = sorted(keys)
    return (f"key(s) not in the reference profile, not compared: {', '.join(shown[:10])}"
            + (f" and {len(shown) - 10} more" if len(shown) > 10 else ""))


def typed(frame: pd.DataFrame, profile: Mapping[str, Any]) -> pd.DataFrame:
    """The profile's features of raw inputs (JSON values, one row each) as compact columns compare()
    reads: numbers float64 (NaN where missing or of another type), categories text, booleans bool
    (None where missing or of another type). A feature absent from every row stays absent."""
    columns: dict[str, Any] = {}
    for name, ref in profile["features"].items():
        if name not in frame.columns:
            continue
        column = frame[name]
        if ref["type"] == "numeric":
            columns[name] = _numbers(column, len(frame))
        elif ref["type"] == "categorical":
            columns[name] = _labels(column, "categorical")
        elif not pd.api.types.is_bool_dtype(column.dtype):
            columns[name] = column.map(lambda v: bool(v) if isinstance(v, (bool, np.bool_)) else None).astype(object)
        else:
            columns[name] = column
    return pd.DataFrame(columns, index=frame.index)


def _numbers(column: pd.Series | None, rows: int) -> np.ndarray:
    """A column as float64, NaN where a value is missing or not a number (a boolean is not one)."""
    if column is None:
        return np.full(rows, np.nan)
    dtype = column.dtype
    if dtype.kind == "f" and isinstance(dtype, np.dtype):
        return column.to_numpy(dtype=float)  # no copy: NaN is already missing
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return column.to_numpy(dtype=float, na_value=np.nan)
    numeric = column.map(lambda v: isinstance(v, (int, float, np.integer, np.floating))
                         and not isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    values = np.full(rows, np.nan)
    if numeric.any():
        try:
            values[numeric] = column[numeric].to_numpy(dtype=float)
        except OverflowError:  # an integer beyond float64 (a row written by hand): infinite, so left out
            values[numeric] = [float(v) if abs(v) < 1e308 else np.inf for v in column[numeric]]
    return values


def _unusable(entry: dict[str, Any], ref: Mapping[str, Any], present: int, missing: int,
              min_samples: int) -> dict[str, Any] | None:
    """The entry of a feature that is not compared, and why; None when it is. Both sides need
    `min_samples` values: with fewer training rows, sampling noise alone crosses the thresholds."""
    least = max(min_samples, 1)
    if ref.get("count", 0) < least:
        why = (f"the reference has {ref.get('count', 0)} value(s), fewer than min_samples {min_samples} "
               "(too few training rows to tell drift from noise)")
    elif present < least:
        why = ("no usable value" if present == 0 else f"{present} usable value(s), fewer than min_samples "
               f"{min_samples}") + f" ({missing} missing or of another type)"
    else:
        return None
    return entry | {"statistic": None, "drifted": None, "note": f"{why}; not compared"}


def _missing_note(missing: int, total: int) -> str | None:
    if not missing:
        return None
    return (f"missing, not finite or of another type in {missing} of {total} recent inputs "
            f"({missing / total:.1%}); compared on the other {total - missing}")


def _numeric(ref: Mapping[str, Any], values: np.ndarray, method: str, threshold: float,
             min_samples: int) -> dict[str, Any]:
    finite = np.isfinite(values)
    missing = int(len(values) - finite.sum())
    entry: dict[str, Any] = {"type": "numeric", "method": method, "threshold": threshold, "rows": int(finite.sum()),
                             "missing": missing}
    if (skip := _unusable(entry, ref, int(finite.sum()), missing, min_samples)) is not None:
        return skip
    cur = np.sort(values if missing == 0 else values[finite])
    q, u = _sketch(ref)
    w, d = _wasserstein_ks(cur, q, u)
    std = ref["std"]
    wasserstein = w / std if std > 0 else w  # a constant reference: the distance itself
    psi = _psi(np.asarray(ref["psi_shares"]),
               np.diff(np.concatenate([[0], np.searchsorted(cur, ref["psi_edges"], side="right"), [len(cur)]])) / len(cur))
    stats = {"wasserstein": wasserstein, "ks": d, "psi": psi}
    statistic = stats[method]
    entry |= {"statistic": statistic, "drifted": bool(statistic >= threshold), "psi": psi,
              "wasserstein": wasserstein, "ks": d, "sketch_error": ref.get("sketch_error", 0.0)}
    if method == "ks":
        entry["p_value"] = _ks_p(d, len(cur), ref["count"])
    notes = [n for n in (_missing_note(missing, len(values)),
                         "constant in the reference rows: the distance is not normalised" if std == 0 else None) if n]
    if notes:
        entry["note"] = "; ".join(notes)
    return entry


def _categorical(ref: Mapping[str, Any], labels: pd.Series, method: str, threshold: float,
                 min_samples: int) -> dict[str, Any]:
    counts = labels.value_counts(dropna=True)
    present = int(counts.sum())
    missing = int(len(labels) - present)
    entry: dict[str, Any] = {"type": ref["type"], "method": method, "threshold": threshold, "rows": present,
                             "missing": missing}
    if (skip := _unusable(entry, ref, present, missing, min_samples)) is not None:
        return skip
    named = list(ref["counts"])
    ref_counts = np.array([*ref["counts"].values(), ref.get("other", 0)], dtype=float)
    known = counts.reindex(named, fill_value=0).to_numpy(dtype=float)
    cur_counts = np.append(known, present - known.sum())
    p_ref, p_cur = ref_counts / ref_counts.sum(), cur_counts / present
    psi = _psi(p_ref, p_cur)
    w, p_value = _cohen_w(p_ref, cur_counts)
    statistic = psi if method == "psi" else w
    entry |= {"statistic": statistic, "drifted": bool(statistic >= threshold), "psi": psi, "chi2_w": w,
              "p_value": p_value}
    notes = [n for n in (_missing_note(missing, len(labels)),) if n]
    unseen = [str(c) for c in counts.index if c not in ref["counts"]]
    if unseen and ref.get("other", 0) == 0:
        shown = ", ".join(repr(c) for c in unseen[:5]) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
        notes.append(f"not seen in training: {shown} ({cur_counts[-1] / present:.1%} of recent inputs)")
    if notes:
        entry["note"] = "; ".join(notes)
    return entry


def _psi(p_ref: np.ndarray, p_cur: np.ndarray) -> float:
    a, b = np.maximum(p_ref, PSI_FLOOR), np.maximum(p_cur, PSI_FLOOR)
    return float(np.sum((b - a) * np.log(b / a)))


def _cohen_w(p_ref: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Cohen's w and the chi-squared p-value of the current counts against the reference shares. A
    bucket empty on both sides is left out; one empty only in the reference is expected at PSI_FLOOR."""
    from scipy.stats import chi2

    used = (p_ref > 0) | (cur_counts > 0)
    expected, counts = np.maximum(p_ref[used], PSI_FLOOR), cur_counts[used]
    n = counts.sum()
    statistic = float(np.sum((counts / n - expected) ** 2 / expected))  # chi2 / n
    return math.sqrt(statistic), float(chi2.sf(statistic * n, max(int(used.sum()) - 1, 1)))


def _ks_p(d: float, n: int, m: int) -> float:
    from scipy.special import kolmogorov

    en = n * m / (n + m)
    return float(kolmogorov(math.sqrt(en) * d))


def _wasserstein_ks(cur: np.ndarray, q: np.ndarray, u: np.ndarray) -> tuple[float, float]:
    """Wasserstein-1 distance and Kolmogorov-Smirnov D between the sorted current values and the
    reference polyline (value q, cumulative share u; both non-decreasing), exactly.

    F (reference) is linear between polyline points, G (current) steps at each current value. Between
    two consecutive current values G is constant, and so is F's piece unless a polyline point lies
    between them; there |F - G| is integrated in closed form, in one vectorised pass. The few intervals
    that hold polyline points (at most one per point) are integrated again on the merged sequence of
    those points and their two current neighbours. D is the largest |F - G| at the ends of intervals
    of positive width. O(n) after the sort; no array of the merged size."""
    n, m = len(cur), len(q)
    left = np.searchsorted(cur, q, side="left")  # current values below each polyline point
    right = np.searchsorted(cur, q, side="right")
    # F on piece k (k = polyline points <= x): base_u[k] + (x - base_q[k]) * slope[k]; k = 0 and k = m
    # are the flat 0 below the reference and 1 above it
    width = np.diff(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(width > 0, np.diff(u) / width, 0.0)
    base_u = np.concatenate([[0.0], u[:-1], [1.0]])
    base_q = np.concatenate([[q[0]], q[:-1], [q[-1]]])
    slope = np.concatenate([[0.0], slope, [0.0]])
    k = np.cumsum(np.bincount(left, minlength=n + 1)[:n])  # each current value's piece
    sl = slope[k]
    f = base_u[k] + (cur - base_q[k]) * sl  # F at each current value (right-continuous)
    h = np.diff(cur)
    a = f[:-1] - np.arange(1, n) / n  # F - G just right of cur[i] ...
    b = a + h * sl[:-1]  # ... and just left of cur[i + 1], on cur[i]'s piece
    area = _trapezoids(a, b, h)
    special = np.flatnonzero(k[1:] != k[:-1])  # a polyline point in (cur[i], cur[i + 1]]: F's piece changes
    if len(special):
        area -= _trapezoids(a[special], b[special], h[special])
    near = np.unique(np.clip(np.concatenate([left - 1, left]), 0, n - 1))  # current neighbours of the points
    size = len(near) + m
    q_at = np.searchsorted(cur[near], q, side="left") + np.arange(m)  # each point before the values >= it
    is_q = np.zeros(size, dtype=bool)
    is_q[q_at] = True
    z, kz, gz = np.empty(size), np.empty(size, dtype=np.int64), np.empty(size)
    z[q_at], z[~is_q] = q, cur[near]
    kz[q_at], kz[~is_q] = np.arange(1, m + 1), k[near]
    gz[q_at], gz[~is_q] = right / n, (near + 1) / n  # G right of each
    a2 = base_u[kz[:-1]] + (z[:-1] - base_q[kz[:-1]]) * slope[kz[:-1]] - gz[:-1]
    h2 = np.diff(z)
    b2 = a2 + h2 * slope[kz[:-1]]
    touch = is_q[:-1] | is_q[1:]  # an interval with a polyline point at an end: one of the special ones
    area += _trapezoids(a2[touch], b2[touch], h2[touch])
    b = np.where(k[1:] == k[:-1], b, a)  # a special interval's bulk b is no limit of F - G
    if (h == 0).any():  # a zero-width interval lies inside a tie: its ends are not limits of F - G
        a, b = a[h > 0], b[h > 0]
    ends = touch & (h2 > 0)
    d = max(a.max(initial=0.0), -a.min(initial=0.0), b.max(initial=0.0), -b.min(initial=0.0),
            np.abs(a2[ends]).max(initial=0.0), np.abs(b2[ends]).max(initial=0.0))
    return area, float(d)


def _trapezoids(a: np.ndarray, b: np.ndarray, h: np.ndarray) -> float:
    """The integral of |F - G| over intervals of width h where it is linear from a to b: h |a + b| / 2,
    or two triangles where a and b have opposite signs (then |a| + |b| > 0)."""
    area = float(np.dot(h, np.abs(a + b))) / 2
    cross = np.flatnonzero((a < 0) != (b < 0))
    if len(cross):
        ac, bc = a[cross], b[cross]
        area += float(np.dot(h[cross], (ac * ac + bc * bc) / (np.abs(ac) + np.abs(bc)) - np.abs(ac + bc))) / 2
    return area
