"""Run the benchmarks one after another, each in its own process (no shared engines, memory or
tracemalloc state), then print the headline figures from their JSON results.

    python -m benchmarks.run_all
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = ("accuracy_check", "event_storm", "retrain_overhead", "live_rollup", "drift")
RESULTS = Path(__file__).with_name("results")


def headline(name: str) -> str:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return "no results"
    r = json.loads(path.read_text())
    if name == "accuracy_check":
        s = r["seconds"]
        return (f"SQL {s['sql']['median']:.3f}s vs pandas {s['pandas']['median']:.3f}s "
                f"= {r['ratio_pandas_over_sql']['of_medians']:.1f}x; agree: {r['agreement']['agree']}")
    if name == "event_storm":
        return (f"leanest publish {r['lean_baseline']['median_publish_msgs_per_s']:,.0f} msgs/s; per-event path "
                f"{r['pipelined_path']['events_per_s']:,.0f} ev/s end to end, draining {r['drain']['events_per_s']:,.0f}; "
                f"batch {r['batch_path']['median_events_per_s']:,.0f} ev/s; COPY {r['copy_ceiling']['median_rows_per_s']:,.0f} "
                f"rows/s; problems: {len(r['problems'])}")
    if name == "drift":
        a = r["agreement"]
        return (f"check {r['check']['median_seconds']:.2f}s vs plain scipy {r['scipy']['seconds']:.2f}s "
                f"= {r['ratio_scipy_over_check']:.1f}x; identical verdicts {a['identical_verdicts']}/{a['features']}")
    if name == "live_rollup":
        return f"rollup vs loading the window into pandas: {r['ratio_over_rollup']['pandas_load_window']:.0f}x"
    return "; ".join(  # one entry per size: rows -> pipeline vs fit+predict
        f"{int(n):,} rows: pipeline {x['seconds']['pipeline']['median']:.2f}s vs fit+predict "
        f"{x['seconds']['bare']['median']:.2f}s = {x['ratio_over_fit_predict']['pipeline']['of_medians']:.2f}x"
        for n, x in r["sizes"].items())


def main() -> int:
    codes = {}
    for name in BENCHMARKS:
        print(f"\n===== benchmarks.{name} =====", flush=True)
        t0 = time.perf_counter()
        codes[name] = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"])
        print(f"===== {name}: exit {codes[name]} after {time.perf_counter() - t0:.0f}s", flush=True)
    print("\nsummary")
    for name in BENCHMARKS:
        print(f"  {name:17s} {'ok  ' if codes[name] == 0 else 'FAIL'} {headline(name)}")
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
