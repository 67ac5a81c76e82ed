"""(a) Live accuracy: the one SQL aggregate vs loading the window's rows into pandas.

1,000,000 completed prediction_records for one model on PostgreSQL (COPY), predicted_at spread
evenly over 30 days, so the 7-day window holds ~233k rows. Actual values are retrainer.demo.synthetic
labels (with drift in the last 4 days); predicted values are the synthetic pre-drift truth, i.e.
what a model trained before the drift would serve. Then, side by side, 5 times each in alternating
order after one warm-up each:

  sql     services.accuracy.raw_live_accuracy(...)   (one aggregate query over the records, nothing loaded)
  pandas  pd.read_sql(actual, predicted of the same window) + numpy (models.ctr.regression_metrics)

Both must give the same MAE / RMSE / R² / accuracy to 1e-9 and the same count; a mismatch is
printed loudly and the benchmark exits 1. Peak Python memory of each approach is measured by
tracemalloc in a separate, untimed run (numpy and pandas buffers are traced).

    python -m benchmarks.accuracy_check [--rows 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from benchmarks import _support as S
from retrainer.db import get_engine, session_scope
from retrainer.db.migrate import upgrade
from retrainer.db.records import PredictionRecord
from retrainer.demo import synthetic
from retrainer.models.base import Live
from retrainer.models.ctr import regression_metrics
from retrainer.services import accuracy

NAME = "accuracy_check"
MODEL = "ctr"
DAYS = 30
LOOKBACK = 7
UNTIL = datetime(2025, 6, 30, tzinfo=UTC)  # fixed and passed explicitly: the window is the same every run
START = UNTIL - timedelta(days=DAYS)
DRIFT_FROM = UNTIL - timedelta(days=4)
CHUNK = 100_000
TOLERANCE = 1e-9
COLUMNS = ("prediction_id", "model", "version_id", "kind", "features", "predicted", "segments", "actual",
           "error", "status", "predicted_at", "completed_at")
METRICS = ("mae", "rmse", "r2", "within_20pct")


def bulk_load(url: str, n_rows: int) -> dict[str, float]:
    """COPY n_rows completed predictions, generated chunk by chunk (bounded memory)."""
    engine = get_engine(url)
    gen_s = copy_s = 0.0
    raw = engine.raw_connection()
    try:
        chunks = math.ceil(n_rows / CHUNK)
        span = (UNTIL - START) / chunks
        done = 0
        for c in range(chunks):
            n = min(CHUNK, n_rows - done)
            t0 = time.perf_counter()
            # the chunk covers its share of the 30 days; rows inside it are evenly spaced, in time order
            rows = synthetic.generate(n, START + c * span, START + (c + 1) * span, seed=1000 + c, drift_from=DRIFT_FROM)
            records = []
            for i, r in enumerate(rows):
                predicted = round(synthetic.true_ctr(r.features, drifted=False), 6)  # the stale model's answer
                records.append((
                    f"bench-{done + i:07d}", MODEL, "ctr-v1", "regression", json.dumps(r.features), predicted,
                    json.dumps({"hook_type": r.hook_type, "template_id": r.template_id}), r.label, abs(r.label - predicted), "completed", r.event_time,
                    r.event_time + timedelta(hours=1),
                ))
            t1 = time.perf_counter()
            with raw.cursor() as cur, cur.copy(f"COPY prediction_records ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for rec in records:
                    copy.write_row(rec)
            raw.commit()
            t2 = time.perf_counter()
            gen_s, copy_s = gen_s + (t1 - t0), copy_s + (t2 - t1)
            done += n
    finally:
        raw.close()
    t0 = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE prediction_records"))
    return {"generate_s": gen_s, "copy_s": copy_s, "vacuum_analyze_s": time.perf_counter() - t0}


def sql_way(url: str) -> accuracy.Accuracy:
    # The scan over prediction_records (the check's path before the hourly rollup; benchmarks.live_rollup
    # measures the rollup, which this COPY-loaded table does not fill).
    with session_scope(url) as session:
        return accuracy.raw_live_accuracy(session, MODEL, LOOKBACK, until=UNTIL, kind=Live.REGRESSION)


def pandas_way(url: str) -> accuracy.Accuracy:
    """The same figures the row-loading way: the window's rows into pandas, then numpy."""
    P = PredictionRecord
    window = accuracy.raw_where(MODEL, *accuracy.window(UNTIL, LOOKBACK), Live.REGRESSION)  # the very same WHERE
    with session_scope(url) as session:
        frame = pd.read_sql(sa.select(P.actual, P.predicted).where(*window), session.connection())
    m = regression_metrics(frame["actual"].to_numpy(dtype=float), frame["predicted"].to_numpy(dtype=float))
    n = len(frame)
    return accuracy.Accuracy(Live.REGRESSION, n, {"mae": m["mae"], "rmse": m["rmse"], "r2": m["r2"],
                                                  "within_20pct": m["accuracy"]})


def peak_memory(fn: Any) -> float:
    """Peak traced allocation (MiB) above what was allocated before the call."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - base) / 2**20


def peak_rss(fn: Any) -> float | None:
    """Peak resident memory (MiB) above the resident size before the call: Linux VmHWM, reset first
    through /proc/self/clear_refs. Unlike tracemalloc it also sees libpq's result buffers."""
    import ctypes
    import gc
    import re
    from pathlib import Path

    status = Path("/proc/self/status")

    def read(key: str) -> int:
        return int(re.search(rf"{key}:\s+(\d+)", status.read_text()).group(1))  # kB

    try:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so earlier runs do not hide this one
        Path("/proc/self/clear_refs").write_text("5")
        base = read("VmRSS")
        fn()
        return (read("VmHWM") - base) / 1024
    except (OSError, AttributeError):
        return None


def plan_summary(url: str) -> list[str]:
    """Node lines of EXPLAIN ANALYZE for the aggregate (which scan PostgreSQL chose)."""
    stmt = sa.select(*accuracy.raw_sums(Live.REGRESSION)).where(
        *accuracy.raw_where(MODEL, *accuracy.window(UNTIL, LOOKBACK), Live.REGRESSION))
    with session_scope(url) as session:
        conn = session.connection()
        compiled = stmt.compile(conn.engine)
        params = {k: str(v) if isinstance(v, str) else v for k, v in compiled.params.items()}
        lines = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {compiled}", params).scalars().all()
    return [ln.strip() for ln in lines if "->" in ln or not ln.startswith(" ")][:8]


def fmt(mib: float | None) -> str:
    return "n/a" if mib is None else f"{mib:.1f}"


def compare(a: accuracy.Accuracy, b: accuracy.Accuracy) -> dict[str, Any]:
    diffs = {}
    for field in METRICS:
        x, y = a[field], b[field]
        diffs[field] = abs(x - y) if x is not None and y is not None else (0.0 if x == y else math.inf)
    ok = all(d <= TOLERANCE for d in diffs.values()) and a.count == b.count
    return {"agree": ok, "max_abs_diff": diffs, "count_sql": a.count, "count_pandas": b.count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    info = S.machine()
    S.log(f"{NAME}: {args.rows:,} rows, {args.repeats} repeats, PostgreSQL {S.postgres_version()}")
    with S.postgres_schema("acc") as url:
        upgrade(url)
        load = bulk_load(url, args.rows)
        S.log(f"loaded: generate {load['generate_s']:.1f}s, COPY {load['copy_s']:.1f}s, "
              f"VACUUM ANALYZE {load['vacuum_analyze_s']:.1f}s")

        sql_res, pd_res = sql_way(url), pandas_way(url)  # warm-up (cache, pool, imports)
        times: dict[str, list[float]] = {"sql": [], "pandas": []}
        for i in range(args.repeats):
            order = [("sql", sql_way), ("pandas", pandas_way)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                seconds, result = S.timed(lambda fn=fn: fn(url))
                times[name].append(seconds)
                check = compare(result, sql_res if name == "pandas" else pd_res)
                if not check["agree"]:
                    S.banner(f"MISMATCH in repeat {i} ({name}): {check}")
        memory = {"sql": peak_memory(lambda: sql_way(url)), "pandas": peak_memory(lambda: pandas_way(url))}
        rss = {"sql": peak_rss(lambda: sql_way(url)), "pandas": peak_rss(lambda: pandas_way(url))}
        plan = plan_summary(url)

    check = compare(sql_res, pd_res)
    med = {k: S.median(v) for k, v in times.items()}
    ratio = med["pandas"] / med["sql"]
    paired = [p / s for s, p in zip(times["sql"], times["pandas"], strict=True)]
    S.print_table(
        f"live accuracy over {LOOKBACK} days: {sql_res.count:,} of {args.rows:,} rows (PostgreSQL, median of {args.repeats})",
        ["approach", "median s", "min–max s", "peak MiB tracemalloc", "peak RSS Δ MiB"],
        [["SQL aggregate (raw_live_accuracy)", f"{med['sql']:.4f}", S.spread(times["sql"], "{:.4f}"), f"{memory['sql']:.2f}", fmt(rss["sql"])],
         ["pandas read_sql + numpy", f"{med['pandas']:.4f}", S.spread(times["pandas"], "{:.4f}"), f"{memory['pandas']:.2f}",
          fmt(rss["pandas"])],
         ["ratio pandas / SQL", f"{ratio:.1f}x", S.spread(paired, "{:.1f}"), f"{memory['pandas'] / max(memory['sql'], 1e-9):.0f}x", ""]],
    )
    S.print_table(
        "figures (must agree to 1e-9)", ["metric", "SQL", "pandas", "|diff|"],
        [[f, f"{sql_res[f]:.12g}", f"{pd_res[f]:.12g}", f"{check['max_abs_diff'][f]:.1e}"]
         for f in METRICS] + [["count", sql_res.count, pd_res.count, abs(sql_res.count - pd_res.count)]],
    )
    print("plan: " + " | ".join(plan))
    info["loadavg_at_end"] = S.loadavg()
    path = S.write_result(NAME, {
        "benchmark": NAME,
        "database": "PostgreSQL " + S.postgres_version(),
        "rows_total": args.rows, "rows_in_window": sql_res.count, "lookback_days": LOOKBACK, "repeats": args.repeats,
        "load_seconds": load,
        "seconds": {k: {"median": med[k], "runs": v} for k, v in times.items()},
        "ratio_pandas_over_sql": {"of_medians": ratio, "paired_runs": paired},
        "peak_mib_tracemalloc": memory,
        "peak_rss_delta_mib": rss,
        "figures": {"sql": sql_res.as_dict(), "pandas": pd_res.as_dict()},
        "agreement": check,
        "plan": plan,
        "machine": info,
    })
    print(f"results: {path}")
    if not check["agree"]:
        S.banner(f"MISMATCH: SQL and pandas figures differ beyond {TOLERANCE}: {check}")
        return 1
    print(f"OK: SQL and pandas agree to {TOLERANCE} on MAE/RMSE/R²/accuracy and count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
