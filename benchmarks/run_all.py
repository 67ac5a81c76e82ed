"""Run the three benchmarks one after another, each in its own process (no shared engines, memory or
tracemalloc state), then print the headline figures from their JSON results.

    python -m benchmarks.run_all
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = ("accuracy_check", "event_storm", "retrain_overhead")
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
        w = r.get("worker_path") or {}
        return (f"bare {r['bare_loop']['median_msgs_per_s']:,.0f} msgs/s, worker path {w.get('events_per_s', 0):,.0f} ev/s, "
                f"batch {r['batch_path']['median_events_per_s']:,.0f} ev/s = {r['ratio_batch_over_bare']['of_medians']:.1f}x "
                f"bare; problems: {len(r['problems'])}")
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
