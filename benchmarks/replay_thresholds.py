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
- false alarms: checks breached before the first change, of the checks that judged (>= min_samples),
  and how many of them asked for a retrain (the rest the kept-candidate cooldown silenced);
- detection delay: replayed rows from each change to the first breached check after it (a breach the
  kept-candidate cooldown silenced counts: the check saw it), none before the next change: missed.

    /tmp/bench-venv/bin/python -m benchmarks.replay_thresholds     # ~12-20 min (12 replays of 20,000 rows)

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

GRID = {"classifier": (5.0, 2.5, 10.0), "regressor": (10.0, 5.0, 20.0)}


def changes(rows: int, warmup: int) -> list[int]:
    """The replayed rows at which the concept changes (the stream's 1/4, 1/2, 3/4, less the warm-up)."""
    return [rows * k // 4 - warmup for k in (1, 2, 3)]


def measure(result: dict[str, Any], rows: int) -> dict[str, Any]:
    """False alarms before the first change and the delay to the first breach after each change."""
    checks = [c for c in result["accuracy_checks"] if c["status"] != "insufficient_data"]
    points = changes(rows, result["warmup"])
    before = [c for c in checks if c["row"] < points[0]]
    delays, standing = [], []
    for k, start in enumerate(points):
        end = points[k + 1] if k + 1 < len(points) else result["replayed"]
        hit = next((c["row"] for c in checks if start <= c["row"] < end and c["breached"]), None)
        delays.append(None if hit is None else hit - start)
        # the last check before the change breached too: the breach after it was already there, not a detection
        last = next((c for c in reversed(checks) if c["row"] < start), None)
        standing.append(last is not None and last["breached"])
    found = [d for d, s in zip(delays, standing, strict=True) if d is not None and not s]
    return {
        "changes": points, "judged_before": len(before), "false_alarms": sum(c["breached"] for c in before),
        # of which asked for a retrain (the others were silenced by the cooldown after a kept candidate)
        "false_retrains_asked": sum(c["status"] == "retrain_needed" for c in before),
        "false_alarm_rate": sum(c["breached"] for c in before) / len(before) if before else None,
        "delays": delays, "standing": standing, "missed": delays.count(None),
        "mean_delay": sum(found) / len(found) if found else None,  # over the changes detected, not standing
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
    parser.add_argument("--remeasure", action="store_true",
                        help="no replay: measure the runs already in --output again and print the table")
    args = parser.parse_args(argv)
    if args.remeasure:
        saved = json.loads(args.output.read_text())
        for s in saved["streams"].values():
            for r in s["settings"]:
                warmup = min(1000, saved["synthetic_rows"] // 5)  # benchmarks/replay.py's
                loop = {k: r[k] for k in ("score", "retrains", "promotions", "rollbacks")}
                r.update(measure({"accuracy_checks": r["accuracy_checks"], "warmup": warmup, "retrainer": loop,
                                  "replayed": saved["synthetic_rows"] - warmup}, saved["synthetic_rows"]))
        args.output.write_text(json.dumps(saved, indent=2) + "\n")
        print(table(saved))
        return 0
    out: dict[str, Any] = {"benchmark": "replay_thresholds", "synthetic_rows": args.rows, "loop": loop_version(),
                           "date": datetime.now(UTC).isoformat(timespec="seconds"), "streams": {}}
    names = [s.strip() for s in args.streams.split(",") if s.strip()]
    anchors: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="retrainer-bench-thresholds-") as workdir:
        # pairs (relative, then absolute at the same x), the generated default's x first and stream by
        # stream: a run stopped early still compares like with like
        for step in range(3):
            for name in names:
                spec = STREAMS[name]
                metric = "accuracy" if spec.family == "classifier" else "mae"
                sign = -1 if metric == "accuracy" else 1  # worse: lower accuracy, higher MAE
                pct = GRID[spec.family][step]
                for rule in ("relative", "absolute"):
                    sets: dict[str, Any] = {"accuracy.relative_pct": pct} if rule == "relative" else {
                        "accuracy.relative_pct": None, "accuracy.metric": metric,
                        "accuracy.threshold": round(anchors[name] * (1 + sign * pct / 100), 6)}
                    result = run_stream(name, spec, args.rows, [args.python], Path(workdir), sets, with_online=False)
                    if name not in anchors:  # the first run of a stream is a relative one: its version's figure
                        anchors[name] = first_holdout(result)
                    row = {"rule": rule, "pct": pct, "set": sets} | measure(result, args.rows)
                    entry = out["streams"].setdefault(name, {"metric": metric, "first_holdout": anchors[name],
                                                             "settings": []})
                    entry["settings"].append(row | {"accuracy_checks": result["accuracy_checks"],
                                                    "decisions": result["decisions"]})
                    print(f"{name} {rule} {pct:g}%: false alarms {row['false_alarms']}/{row['judged_before']}, "
                          f"delays {row['delays']}, score {row['score']:.4f}, retrains {row['retrains']}",
                          file=sys.stderr, flush=True)
                    args.output.parent.mkdir(parents=True, exist_ok=True)
                    # written after each replay: a run stopped early keeps its figures
                    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    return 0


def table(out: dict[str, Any]) -> str:
    lines = [("| stream | rule | x % | threshold | false alarms before the 1st change (retrains asked) | delays (rows) "
              "| missed | mean delay | score | retrains | promotions | rollbacks |"),
             "|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in out["streams"].items():
        for r in sorted(s["settings"], key=lambda r: (r["rule"] != "relative", r["pct"])):
            shown = (f"{r['set']['accuracy.threshold']:.4f}" if r["rule"] == "absolute"
                     else f"holdout {'-' if s['metric'] == 'accuracy' else '+'}{r['pct']:g} %")
            delays = ", ".join("–" if d is None else f"{d}{'*' if s else ''}"
                               for d, s in zip(r["delays"], r.get("standing", [False] * 3), strict=True))
            mean = "–" if r["mean_delay"] is None else f"{r['mean_delay']:.0f}"
            lines.append(f"| {name} | {r['rule']} | {r['pct']:g} | {shown} | {r['false_alarms']}/{r['judged_before']} "
                         f"({r['false_retrains_asked']}) | {delays} | {r['missed']} | {mean} | {r['score']:.4f} | "
                         f"{r['retrains']} | {r['promotions']} | {r['rollbacks']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
