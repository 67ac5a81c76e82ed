"""(j) thresholds: which accuracy threshold sees a concept change sooner for the same false alarms, the
absolute one (`accuracy.threshold`, a fixed value) or the relative one (`accuracy.relative_pct`: the
live metric worse than the production version's own holdout figure by x %)?

Each setting is a full `retrainer replay` of a stream whose changes are at known rows (SEA and
FriedmanDrift of benchmarks/replay.py: abrupt changes at 1/4, 1/2 and 3/4 of the rows), the loop
acting on what the check finds (a breach asks for a retrain, as in production). Swept, for x in a
grid (classification 2.5, 5, 10 %; regression 5, 10, 20 %):
- relative: `accuracy.relative_pct: x` (replay's generated configuration, with x in place of its 5/10);
- absolute: `accuracy.relative_pct: null, accuracy.threshold: T(x)`, T(x) the first version's holdout
  figure worsened by x % and then fixed: what a person who sets a threshold from the model they ship
  would write. Until the first promotion the two rules are the same; they differ in what they compare
  with after production changed.
Read off each replay's `accuracy_checks` (every hourly check: its row, value, threshold, verdict):
- false alarms: checks breached before the first change, of the checks that judged (>= min_samples);
- detection delay: replayed rows from each change to the first breached check after it (a breach the
  kept-candidate cooldown silenced counts: the check saw it), none before the next change: missed.

    /tmp/bench-venv/bin/python -m benchmarks.replay_thresholds     # ~9 min (12 replays of 20,000 rows)

Writes benchmarks/results/replay_thresholds.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.replay import RESULTS, ROOT, STREAMS, loop_version, run_stream

GRID = {"classifier": (2.5, 5.0, 10.0), "regressor": (5.0, 10.0, 20.0)}


def changes(rows: int, warmup: int) -> list[int]:
    """The replayed rows at which the concept changes (the stream's 1/4, 1/2, 3/4, less the warm-up)."""
    return [rows * k // 4 - warmup for k in (1, 2, 3)]


def measure(result: dict[str, Any], rows: int) -> dict[str, Any]:
    """False alarms before the first change and the delay to the first breach after each change."""
    checks = [c for c in result["accuracy_checks"] if c["status"] != "insufficient_data"]
    points = changes(rows, result["warmup"])
    before = [c for c in checks if c["row"] < points[0]]
    delays = []
    for k, start in enumerate(points):
        end = points[k + 1] if k + 1 < len(points) else result["replayed"]
        hit = next((c["row"] for c in checks if start <= c["row"] < end and c["breached"]), None)
        delays.append(None if hit is None else hit - start)
    found = [d for d in delays if d is not None]
    return {
        "changes": points, "judged_before": len(before), "false_alarms": sum(c["breached"] for c in before),
        "false_alarm_rate": sum(c["breached"] for c in before) / len(before) if before else None,
        "delays": delays, "missed": delays.count(None),
        "mean_delay": sum(found) / len(found) if found else None,
        "score": result["retrainer"]["score"], "retrains": result["retrainer"]["retrains"],
        "promotions": result["retrainer"]["promotions"], "rollbacks": result["retrainer"]["rollbacks"],
        "breaches": sum(c["breached"] for c in checks), "judged": len(checks),
    }


def first_holdout(result: dict[str, Any]) -> float:
    first = result["accuracy_checks"][0]
    return float(first["holdout_value"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--streams", default="sea,friedman")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--output", type=Path, default=RESULTS / "replay_thresholds.json")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"benchmark": "replay_thresholds", "synthetic_rows": args.rows, "loop": loop_version(),
                           "date": datetime.now(UTC).isoformat(timespec="seconds"), "streams": {}}
    with tempfile.TemporaryDirectory(prefix="retrainer-bench-thresholds-") as workdir:
        for name in [s.strip() for s in args.streams.split(",") if s.strip()]:
            spec = STREAMS[name]
            metric = "accuracy" if spec.family == "classifier" else "mae"
            sign = -1 if metric == "accuracy" else 1  # worse: lower accuracy, higher MAE
            rows: list[dict[str, Any]] = []
            anchor = None
            for rule in ("relative", "absolute"):
                for pct in GRID[spec.family]:
                    if rule == "relative":
                        sets = {"accuracy.relative_pct": pct}
                    else:
                        assert anchor is not None
                        sets = {"accuracy.relative_pct": None, "accuracy.metric": metric,
                                "accuracy.threshold": round(anchor * (1 + sign * pct / 100), 6)}
                    result = run_stream(name, spec, args.rows, [args.python], Path(workdir), sets, with_online=False)
                    anchor = anchor if anchor is not None else first_holdout(result)
                    row = {"rule": rule, "pct": pct, "set": sets} | measure(result, args.rows)
                    rows.append(row | {"accuracy_checks": result["accuracy_checks"], "decisions": result["decisions"]})
                    print(f"{name} {rule} {pct:g}%: false alarms {row['false_alarms']}/{row['judged_before']}, "
                          f"delays {row['delays']}, score {row['score']:.4f}, retrains {row['retrains']}",
                          file=sys.stderr, flush=True)
            out["streams"][name] = {"metric": metric, "first_holdout": anchor, "settings": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    return 0


def table(out: dict[str, Any]) -> str:
    lines = [("| stream | rule | x % | threshold | false alarms (before 1st change) | delays (rows) | missed | "
              "mean delay | score | retrains | promotions | rollbacks |"),
             "|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in out["streams"].items():
        for r in s["settings"]:
            shown = (f"{r['set']['accuracy.threshold']:.4f}" if r["rule"] == "absolute"
                     else f"holdout {'-' if s['metric'] == 'accuracy' else '+'}{r['pct']:g} %")
            delays = ", ".join("–" if d is None else str(d) for d in r["delays"])
            mean = "–" if r["mean_delay"] is None else f"{r['mean_delay']:.0f}"
            lines.append(f"| {name} | {r['rule']} | {r['pct']:g} | {shown} | {r['false_alarms']}/{r['judged_before']} | "
                         f"{delays} | {r['missed']} | {mean} | {r['score']:.4f} | {r['retrains']} | "
                         f"{r['promotions']} | {r['rollbacks']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
