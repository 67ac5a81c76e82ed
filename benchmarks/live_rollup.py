"""(e) Live accuracy at 10M prediction records: the hourly rollup vs pandas vs the raw SQL scan.

10,000,000 prediction_records on PostgreSQL (COPY, in a throw-away schema, dropped afterwards): 80 %
for `ctr` (regression; versions ctr-v1/v2/v3 by 10-day period, 5 % without a version), 20 % for
`churn` (classification), predicted_at spread evenly over 30 days, 10 % still without an outcome.
They are loaded at migration 0004; upgrading to 0005 then backfills the rollup (timed). The
question is the accuracy check's: ctr's production version (ctr-v3) over the last 7 days. Side by
side, in rotating order after one warm-up each:

  pandas load window  what the issue names as the baseline: the window's completed rows of
                    (ctr, ctr-v3) loaded into pandas as a user would do it fastest (COPY ... TO STDOUT
                    in CSV, pandas' C parser), then the metrics with numpy
  pandas groupby    the records already in a DataFrame (categorical model/version/kind/status):
                    the window's completed regression rows, groupby(model, version) sums, (ctr, ctr-v3)
  pandas mask       the fastest direct way found: one boolean mask over numpy arrays (category codes,
                    int64 times), then the metrics on the selected rows
  raw SQL           services.accuracy.raw_live_accuracy: one aggregate scanning prediction_records
                    (the path before the rollup)
  rollup            services.accuracy.live_accuracy: the sums of ~170 rows of live_accuracy_hours for
                    the whole hours, plus the records of the two partial hours at the window's edges
                    (one hour of records in all), in its own session as a check runs it (connection
                    checkout with pre-ping, BEGIN, the queries, COMMIT)
  rollup_open_session  the same call in a session already open: the query's own cost

Every approach must give the same count and the same metrics to 1e-9, else a loud MISMATCH and
exit 1. Then the write path: batches of 5,000 outcome events through services.events.store (the
batch path: one savepoint and one record_outcome each) with and without the rollup's UPSERT.

    python -m benchmarks.live_rollup [--rows 10000000] [--repeats 7] [--write-repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from benchmarks import _support as S
from retrainer.config import load_settings
from retrainer.db import get_engine, session_scope
from retrainer.db.migrate import upgrade
from retrainer.db.records import LiveAccuracyHour, PredictionRecord
from retrainer.models.base import Live
from retrainer.services import accuracy, events, live_rollup

NAME = "live_rollup"
MODEL, VERSION, OTHER = "ctr", "ctr-v3", "churn"
DAYS, LOOKBACK = 30, 7
UNTIL = datetime(2025, 6, 30, 0, 20, tzinfo=UTC)  # fixed: the same window every run (mid-hour on purpose)
START = UNTIL - timedelta(days=DAYS)
SINCE, END = accuracy.window(UNTIL, LOOKBACK)
CHUNK = 500_000
TOLERANCE = 1e-9
METRICS = ("mae", "rmse", "r2", "within_20pct")
COLUMNS = ("prediction_id", "model", "version_id", "kind", "features", "predicted", "segments", "actual", "error",
           "status", "predicted_at", "completed_at")
WRITE_MODEL, BATCH = "writes", 5_000


# --- data ---------------------------------------------------------------------------------------

def generate(n: int, seed: int = 7) -> pd.DataFrame:
    """The records, time-ordered, with microsecond times (what PostgreSQL keeps)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    start_us = int(START.timestamp() * 1e6)
    at_us = start_us + (idx * (DAYS * 86_400 * 10**6 // n))
    churn = idx % 5 == 4
    day = (at_us - start_us) // (86_400 * 10**6)
    version = np.where(churn, "churn-v1", np.where(day < 10, "ctr-v1", np.where(day < 20, "ctr-v2", VERSION)))
    version = np.where(idx % 20 == 7, None, version)
    actual = rng.uniform(0.01, 0.08, n).round(6)
    predicted = (actual + rng.normal(0, 0.01, n)).round(6)
    cls = rng.integers(0, 2, n).astype(float)
    actual = np.where(churn, cls, actual)
    predicted = np.where(churn, np.where(rng.uniform(size=n) < 0.8, cls, 1 - cls), predicted)
    done = idx % 10 != 3
    return pd.DataFrame({
        "model": pd.Categorical(np.where(churn, OTHER, MODEL)),
        "version_id": pd.Categorical(version),
        "kind": pd.Categorical(np.where(churn, "classification", "regression")),
        "status": pd.Categorical(np.where(done, "completed", "predicted")),
        "predicted_at": pd.to_datetime(at_us, unit="us", utc=True),
        "predicted": predicted,
        "actual": np.where(done, actual, np.nan),
    })


def copy_records(url: str, frame: pd.DataFrame) -> dict[str, float]:
    """COPY the frame in CSV chunks (empty field = NULL), then VACUUM ANALYZE."""
    raw = get_engine(url).raw_connection()
    fmt_s = copy_s = 0.0
    try:
        for lo in range(0, len(frame), CHUNK):
            t0 = time.perf_counter()
            part = frame.iloc[lo:lo + CHUNK]
            done = part.status == "completed"
            out = pd.DataFrame({
                "prediction_id": "b" + pd.Series(np.arange(lo, lo + len(part)), index=part.index).astype(str),
                "model": part.model, "version_id": part.version_id, "kind": part.kind, "features": "{}",
                "predicted": part.predicted, "segments": "{}", "actual": part.actual,
                "error": (part.actual - part.predicted).abs(), "status": part.status,
                "predicted_at": part.predicted_at,
                "completed_at": part.predicted_at.where(done) + pd.Timedelta(hours=1),
            })[list(COLUMNS)]
            buf = io.StringIO()
            out.to_csv(buf, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S.%f+00")
            t1 = time.perf_counter()
            with raw.cursor() as cur, cur.copy(f"COPY prediction_records ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv)") as cp:
                cp.write(buf.getvalue())
            raw.commit()
            fmt_s, copy_s = fmt_s + (t1 - t0), copy_s + (time.perf_counter() - t1)
    finally:
        raw.close()
    t0 = time.perf_counter()
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE prediction_records"))
    return {"format_csv_s": fmt_s, "copy_s": copy_s, "vacuum_analyze_s": time.perf_counter() - t0}


# --- the four ways to the same figures ----------------------------------------------------------

def rollup_way(url: str) -> accuracy.Accuracy:
    with session_scope(url) as session:
        return accuracy.live_accuracy(session, MODEL, LOOKBACK, version_id=VERSION, until=UNTIL, kind=Live.REGRESSION)


def rollup_in_session(session: Any) -> accuracy.Accuracy:
    """The rollup query alone, in a session already open (no connection checkout, BEGIN, COMMIT)."""
    return accuracy.live_accuracy(session, MODEL, LOOKBACK, version_id=VERSION, until=UNTIL, kind=Live.REGRESSION)


def rollup_plan(url: str) -> list[str]:
    """EXPLAIN ANALYZE of the rollup's query: which index, how many rows, how long in the server."""
    (first, last), _ = accuracy._pieces(*accuracy.window(UNTIL, LOOKBACK))
    stmt = live_rollup._totals(False, True)
    params = {"model": MODEL, "kind": "regression", "since": first, "last_hour": last, "version_id": VERSION}
    with session_scope(url) as session:
        conn = session.connection()
        compiled = stmt.compile(conn.engine)
        lines = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {compiled}",
                                     {k: params[k] for k in compiled.params}).scalars().all()
    return [ln.strip() for ln in lines]


def raw_sql_way(url: str) -> accuracy.Accuracy:
    with session_scope(url) as session:
        return accuracy.raw_live_accuracy(session, MODEL, LOOKBACK, version_id=VERSION, until=UNTIL, kind=Live.REGRESSION)


def pandas_groupby_way(frame: pd.DataFrame) -> accuracy.Accuracy:
    """pandas on the frame in memory: the window's completed regression rows, per (model, version)
    sums, (ctr, ctr-v3)'s into the metrics."""
    done = frame[(frame.status == "completed") & (frame.kind == "regression") & (frame.predicted_at >= SINCE)
                 & (frame.predicted_at < END)]
    err = done.actual - done.predicted
    parts = pd.DataFrame({
        "model": done.model, "version_id": done.version_id,
        "n": 1, "sum_abs_err": err.abs(), "sum_sq_err": err * err, "sum_y": done.actual,
        "sum_yy": done.actual * done.actual,
        "within_20pct": (err.abs() <= live_rollup.WITHIN_FRACTION * done.actual.abs()).astype(np.int64),
    })
    sums = parts.groupby(["model", "version_id"], observed=True, sort=False).sum().loc[(MODEL, VERSION)]
    return accuracy.from_sums(Live.REGRESSION, SimpleNamespace(**sums.to_dict()))


def pandas_load_window_way(url: str) -> accuracy.Accuracy:
    """The window's rows loaded into pandas the fastest way a user has (COPY out as CSV, pandas' C
    parser), then the metrics with numpy."""
    query = ("COPY (SELECT actual, predicted FROM prediction_records WHERE model = 'ctr' AND version_id = 'ctr-v3' "
             "AND kind = 'regression' AND status = 'completed' AND predicted_at >= %s AND predicted_at < %s) "
             "TO STDOUT (FORMAT csv)")
    raw = get_engine(url).raw_connection()
    try:
        buf = io.BytesIO()
        with raw.cursor() as cur, cur.copy(query, (SINCE, END)) as cp:
            for block in cp:
                buf.write(block)
        raw.commit()
    finally:
        raw.close()
    buf.seek(0)
    rows = pd.read_csv(buf, header=None, names=["actual", "predicted"], dtype=float)
    y, p = rows.actual.to_numpy(), rows.predicted.to_numpy()
    err = y - p
    sse = float(np.dot(err, err))
    return accuracy.Accuracy(Live.REGRESSION, len(y), {
        "mae": float(np.abs(err).mean()), "rmse": math.sqrt(sse / len(y)),
        "r2": 1.0 - sse / float(((y - y.mean()) ** 2).sum()),
        "within_20pct": float((np.abs(err) <= live_rollup.WITHIN_FRACTION * np.abs(y)).mean()),
    })


def _ticks(moment: datetime, unit: str) -> int:
    return int(np.datetime64(moment.astimezone(UTC).replace(tzinfo=None), unit).astype(np.int64))


def prepare_arrays(frame: pd.DataFrame) -> dict[str, Any]:
    """What the mask way reads: numpy arrays (done once, not timed: the frame is already in memory)."""
    return {
        "model": frame.model.cat.codes.to_numpy(), "model_code": frame.model.cat.categories.get_loc(MODEL),
        "version": frame.version_id.cat.codes.to_numpy(),
        "version_code": frame.version_id.cat.categories.get_loc(VERSION),
        "kind": frame.kind.cat.codes.to_numpy(), "kind_code": frame.kind.cat.categories.get_loc("regression"),
        "status": frame.status.cat.codes.to_numpy(), "status_code": frame.status.cat.categories.get_loc("completed"),
        "at": frame.predicted_at.array.asi8,  # int64 in the column's unit
        "since": _ticks(SINCE, frame.predicted_at.dt.unit), "end": _ticks(END, frame.predicted_at.dt.unit),
        "actual": frame.actual.to_numpy(), "predicted": frame.predicted.to_numpy(),
    }


def pandas_mask_way(a: dict[str, Any]) -> accuracy.Accuracy:
    """One boolean mask, then the metrics on the selected rows (numpy)."""
    m = ((a["model"] == a["model_code"]) & (a["version"] == a["version_code"]) & (a["kind"] == a["kind_code"])
         & (a["status"] == a["status_code"]) & (a["at"] >= a["since"]) & (a["at"] < a["end"]))
    y, p = a["actual"][m], a["predicted"][m]
    err = y - p
    n = len(y)
    sse = float(np.dot(err, err))
    return accuracy.Accuracy(Live.REGRESSION, n, {
        "mae": float(np.abs(err).mean()), "rmse": math.sqrt(sse / n),
        "r2": 1.0 - sse / float(((y - y.mean()) ** 2).sum()),
        "within_20pct": float((np.abs(err) <= live_rollup.WITHIN_FRACTION * np.abs(y)).mean()),
    })


def compare(a: accuracy.Accuracy, b: accuracy.Accuracy) -> dict[str, Any]:
    diffs = {f: abs(a[f] - b[f]) if a[f] is not None and b[f] is not None else (0.0 if a[f] == b[f] else math.inf)
             for f in METRICS}
    return {"agree": a.count == b.count and all(d <= TOLERANCE for d in diffs.values()), "max_abs_diff": diffs,
            "counts": [a.count, b.count]}


# --- the write path -----------------------------------------------------------------------------

@contextlib.contextmanager
def without_rollup() -> Iterator[None]:
    """The write path as before the rollup: every rollup step a no-op."""
    noop = lambda *_a, **_k: None
    patches = [(live_rollup, "bucket"), (live_rollup, "change"), (live_rollup, "add"), (live_rollup.Batch, "stage"),
               (live_rollup.Batch, "keep"), (live_rollup.Batch, "write")]
    saved = [getattr(owner, name) for owner, name in patches]
    for owner, name in patches:
        setattr(owner, name, noop)
    try:
        yield
    finally:
        for (owner, name), real in zip(patches, saved, strict=True):
            setattr(owner, name, real)


def write_batches(url: str, repeats: int, label: str = "w") -> dict[str, list[float]]:
    """Outcomes/s of events.store on batches of BATCH outcome events, with and without the rollup
    (`without_rollup`), alternating; the predictions are logged first, untimed."""
    settings = load_settings(var_dir=str(S.WORKDIR / "var"), database_url=url,
                             models={WRITE_MODEL: {"family": "ctr", "schedules": {"check": None, "retrain": None,
                                                                                   "monitor": None}}})
    rng = np.random.default_rng(3)
    rates: dict[str, list[float]] = {"with_rollup": [], "without_rollup": []}
    for r in range(repeats):
        modes = ["with_rollup", "without_rollup"] if r % 2 == 0 else ["without_rollup", "with_rollup"]
        for mode in modes:
            ids = [f"{label}-{r}-{mode}-{i}" for i in range(BATCH)]
            at = [UNTIL - timedelta(minutes=float(m)) for m in rng.uniform(0, 600, BATCH)]
            with get_engine(url).begin() as conn:
                conn.execute(sa.insert(PredictionRecord), [
                    {"prediction_id": pid, "model": WRITE_MODEL, "version_id": "writes-v1", "kind": "regression",
                     "features": {}, "predicted": 0.03, "segments": {}, "status": "predicted", "predicted_at": t}
                    for pid, t in zip(ids, at, strict=True)])
            batch = [events.parse({"type": "outcome", "prediction_id": pid, "value": round(float(v), 6)})
                     for pid, v in zip(ids, rng.uniform(0.01, 0.08, BATCH), strict=True)]
            with without_rollup() if mode == "without_rollup" else contextlib.nullcontext():
                t0 = time.perf_counter()
                with session_scope(url) as session:
                    stored = events.store(session, settings, batch)
                seconds = time.perf_counter() - t0
            assert stored.stored == BATCH and not stored.rejected, stored
            rates[mode].append(BATCH / seconds)
    return rates


# --- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write-repeats", type=int, default=5)
    args = parser.parse_args(argv)
    info = S.machine()
    S.log(f"{NAME}: {args.rows:,} records, {args.repeats} repeats, PostgreSQL {S.postgres_version()}")
    t0 = time.perf_counter()
    frame = generate(args.rows)
    gen_s = time.perf_counter() - t0
    with S.postgres_schema("roll") as url, contextlib.ExitStack() as held_session:
        upgrade(url, "0004")
        load = copy_records(url, frame) | {"generate_s": gen_s}
        S.log(f"loaded: generate {gen_s:.1f}s, CSV {load['format_csv_s']:.1f}s, COPY {load['copy_s']:.1f}s, "
              f"VACUUM ANALYZE {load['vacuum_analyze_s']:.1f}s")
        t0 = time.perf_counter()
        upgrade(url)  # 0005: the rollup backfilled from the completed records
        load["backfill_0005_s"] = time.perf_counter() - t0
        with session_scope(url) as session:
            buckets = session.scalar(sa.select(sa.func.count()).select_from(LiveAccuracyHour))
        S.log(f"migration 0005 backfill: {load['backfill_0005_s']:.1f}s, {buckets:,} rollup rows")

        arrays = prepare_arrays(frame)
        held = held_session.enter_context(session_scope(url))
        ways = {"pandas_load_window": lambda: pandas_load_window_way(url),
                "pandas_groupby": lambda: pandas_groupby_way(frame), "pandas_mask": lambda: pandas_mask_way(arrays),
                "raw_sql": lambda: raw_sql_way(url), "rollup": lambda: rollup_way(url),
                "rollup_open_session": lambda: rollup_in_session(held)}
        results = {name: fn() for name, fn in ways.items()}  # warm-up (cache, pool, imports)
        problems = [f"{name}: {c}" for name in ways if not (c := compare(results[name], results["rollup"]))["agree"]]
        times: dict[str, list[float]] = {name: [] for name in ways}
        names = list(ways)
        for i in range(args.repeats):
            for name in names[i % len(names):] + names[:i % len(names)]:
                seconds, result = S.timed(ways[name])
                times[name].append(seconds)
                if not (c := compare(result, results["rollup"]))["agree"]:
                    problems.append(f"repeat {i} {name}: {c}")
        held_session.close()
        plan = rollup_plan(url)
        S.log("writes: batches of 5,000 outcome events, with and without the rollup")
        rates = write_batches(url, args.write_repeats)

    med = {k: S.median(v) for k, v in times.items()}
    rate = {k: S.median(v) for k, v in rates.items()}
    paired_cost = [1 - w / wo for w, wo in zip(rates["with_rollup"], rates["without_rollup"], strict=True)]
    baselines = ("pandas_load_window", "pandas_groupby", "pandas_mask", "raw_sql")
    ratios = {k: med[k] / med["rollup"] for k in baselines}
    ratios_open_session = {k: med[k] / med["rollup_open_session"] for k in baselines}
    roll = results["rollup"]
    S.print_table(
        f"live accuracy of {MODEL}/{VERSION}, the last {LOOKBACK} d exactly: {roll.count:,} of {args.rows:,} records "
        f"(PostgreSQL, median of {args.repeats})",
        ["approach", "median s", "min–max s", "÷ rollup"],
        [[name, f"{med[name]:.4f}", S.spread(times[name], "{:.4f}"), f"{med[name] / med['rollup']:.0f}x"]
         for name in ways],
    )
    S.print_table(
        "figures (every approach must agree to 1e-9)", ["metric", *ways],
        [[f, *(f"{results[w][f]:.12g}" for w in ways)] for f in METRICS] + [["count", *(results[w].count for w in ways)]],
    )
    S.print_table(
        f"write path: events.store, batches of {BATCH:,} outcome events (median of {args.write_repeats})",
        ["", "outcomes/s", "min–max"],
        [[k, f"{rate[k]:,.0f}", S.spread(v, "{:,.0f}")] for k, v in rates.items()]
        + [["cost of the rollup", f"{1 - rate['with_rollup'] / rate['without_rollup']:.1%}",
            f"paired median {S.median(paired_cost):.1%} ({S.spread(paired_cost, '{:.1%}')})"]],
    )
    info["loadavg_at_end"] = S.loadavg()
    path = S.write_result(NAME, {
        "benchmark": NAME, "database": "PostgreSQL " + S.postgres_version(),
        "records_total": args.rows, "records_in_window": roll.count, "rollup_rows": buckets,
        "window": [SINCE.isoformat(), END.isoformat()], "repeats": args.repeats,
        "load_seconds": load,
        "seconds": {k: {"median": med[k], "runs": v} for k, v in times.items()},
        "ratio_over_rollup": ratios,
        "ratio_over_rollup_open_session": ratios_open_session,
        "figures": {k: v.as_dict() for k, v in results.items()},
        "agreement": {k: compare(v, roll) for k, v in results.items()},
        "write_path_outcomes_per_s": {k: {"median": rate[k], "runs": v} for k, v in rates.items()},
        "rollup_write_cost": {"of_medians": 1 - rate["with_rollup"] / rate["without_rollup"],
                              "paired_median": S.median(paired_cost), "paired_runs": paired_cost},
        "rollup_plan": plan,
        "machine": info,
    })
    print("rollup plan: " + " | ".join(plan))
    print(f"results: {path}")
    if problems:
        S.banner("MISMATCH: " + " | ".join(problems[:5]))
        return 1
    print(f"OK: all four approaches agree to {TOLERANCE} on MAE/RMSE/R²/within_20pct and count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
