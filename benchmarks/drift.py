"""(f) The drift check at 1,000,000 rows x 50 numeric features, reference vs current, the default test
(normalised Wasserstein, drifted at >= 0.1): retrainer's check from the stored profile against the
plain scipy computation on the raw arrays, with their verdicts compared.

Data (seeded, float64): the reference and the current window, 1,000,000 x 50 each, ten shapes
(benchmarks/drift_calibration.py: normal, uniform, log-normal, exponential, hour of day, bimodal, a
rounded age, a heavy tail, Student's t(3), a 0/1 flag) five times over. In the current window features
0-14 move by 0.5 standard deviations, 15-19 by 0.11 and 20-24 by 0.09 (either side of the threshold,
by more than the sketch's error), 25-29 are stretched by 1.2 about their mean; 30-49 are unchanged.

Each measurement runs in a child process of its own (`--child STEP`), which makes its data from the
seed first (untimed), then times the step and reports the peak resident set of the step (Linux VmHWM,
reset through /proc/self/clear_refs after the data is made: the step's own peak, the data included)
and of its whole life (getrusage of the child, from os.wait4):
  profile   drift.build_profile on the reference: what a retrain does once; writes the profile as JSON,
            as the feature_profiles row holds it
  check     json.loads of that profile + drift.compare on the current window (a pandas frame): what
            the beat check does, never reading the reference again (3 runs; --threads 1: one core)
  scipy     the honest baseline: per column scipy.stats.wasserstein_distance(ref, cur) / ref.std()
            on the raw arrays, reference and current both in memory (1 run)
Targets: check <= 5 s and <= 1.5 GB peak, with the same verdicts as scipy in this run. A verdict that
differs prints a loud MISMATCH and exits 1.

    python -m benchmarks.drift [--rows 1000000] [--features 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NAME = "drift"
SEED = 20261124
THRESHOLD = 0.1  # the default test's


# --- the children -------------------------------------------------------------------------------------

def column(j: int, n: int, current: bool) -> np.ndarray:
    from benchmarks.drift_calibration import NUMERIC

    shapes = list(NUMERIC.values())
    sample, std = shapes[j % len(shapes)]
    x = sample(np.random.default_rng([SEED, j, int(current)]), n)
    if current:
        if j < 15:
            x += 0.5 * std
        elif j < 20:
            x += 0.11 * std
        elif j < 25:
            x += 0.09 * std
        elif j < 30:
            x = x.mean() + 1.2 * (x - x.mean())
    return x


def matrix(n: int, features: int, current: bool) -> np.ndarray:
    """n x features, each column contiguous (as a pandas frame keeps its float block)."""
    out = np.empty((features, n))
    for j in range(features):
        out[j] = column(j, n, current)
    return out.T


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def vm_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS


def child(step: str, rows: int, features: int, workdir: Path, threads: int | None) -> dict[str, Any]:
    import pandas as pd

    from retrainer.services import drift

    names = [f"f{j:02d}" for j in range(features)]
    profile_path = workdir / "profile.json"
    out: dict[str, Any] = {"step": step}
    if step == "profile":
        ref = pd.DataFrame(matrix(rows, features, current=False), columns=names, copy=False)
        out["rss_before_mib"] = vm_rss_mib()
        reset_peak()
        t0 = time.perf_counter()
        profile = drift.build_profile(ref, dict.fromkeys(names, "numeric"))
        text = json.dumps(profile)
        profile_path.write_text(text)
        out["seconds"] = time.perf_counter() - t0
        out["profile_bytes"] = len(text)
        out["sketch_error"] = {n: profile["features"][n]["sketch_error"] for n in names}
    elif step == "check":
        if threads:
            drift.THREADS = threads
        cur = pd.DataFrame(matrix(rows, features, current=True), columns=names, copy=False)
        out["rss_before_mib"] = vm_rss_mib()
        reset_peak()
        t0 = time.perf_counter()
        profile = json.loads(profile_path.read_text())
        result = drift.compare(profile, cur, numeric="wasserstein", numeric_threshold=THRESHOLD, min_samples=1)
        out["seconds"] = time.perf_counter() - t0
        out["threads"] = drift.THREADS if rows * features >= drift.PARALLEL_VALUES else 1
        out["statistic"] = {n: f["statistic"] for n, f in result.features.items()}
        out["drifted"] = {n: f["drifted"] for n, f in result.features.items()}
        out["dataset_drift"] = result.drifted
    elif step == "scipy":
        from scipy.stats import wasserstein_distance

        ref, cur = matrix(rows, features, current=False), matrix(rows, features, current=True)
        out["rss_before_mib"] = vm_rss_mib()
        reset_peak()
        t0 = time.perf_counter()
        stats = {n: float(wasserstein_distance(ref[:, j], cur[:, j]) / ref[:, j].std()) for j, n in enumerate(names)}
        out["seconds"] = time.perf_counter() - t0
        out["statistic"] = stats
        out["drifted"] = {n: s >= THRESHOLD for n, s in stats.items()}
        out["dataset_drift"] = sum(out["drifted"].values()) / features >= 0.5
    out["peak_mib"] = vm_hwm_mib()
    return out


def run_child(step: str, args: argparse.Namespace, workdir: Path, threads: int | None = None) -> dict[str, Any]:
    """One step in a fresh process; its report plus the child's lifetime peak RSS (os.wait4's rusage)."""
    cmd = [sys.executable, "-m", "benchmarks.drift", "--child", step, "--rows", str(args.rows),
           "--features", str(args.features), "--workdir", str(workdir)] + (["--threads", str(threads)] if threads else [])
    with tempfile.TemporaryFile() as stdout:
        proc = subprocess.Popen(cmd, stdout=stdout)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        text = stdout.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"child {step} exited {proc.returncode}")
    report = json.loads(text.strip().splitlines()[-1])
    report["lifetime_peak_mib"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    return report


# --- the parent ---------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the check (each in its own process)")
    parser.add_argument("--child", choices=("profile", "check", "scipy"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.features, args.workdir, args.threads)))
        return 0

    from benchmarks import _support as S

    workdir = S.WORKDIR / "drift"
    workdir.mkdir(parents=True, exist_ok=True)
    S.log(f"{args.rows:,} rows x {args.features} features; each step in its own process")
    profile = run_child("profile", args, workdir)
    S.log(f"profile built in {profile['seconds']:.2f} s ({profile['profile_bytes'] / 1e6:.1f} MB of JSON)")
    checks = []
    for i in range(args.repeats):
        checks.append(run_child("check", args, workdir))
        S.log(f"check {i + 1}/{args.repeats}: {checks[-1]['seconds']:.2f} s, peak {checks[-1]['peak_mib']:.0f} MiB")
    single = run_child("check", args, workdir, threads=1)
    S.log(f"check on one thread: {single['seconds']:.2f} s")
    scipy = run_child("scipy", args, workdir)
    S.log(f"scipy: {scipy['seconds']:.2f} s, peak {scipy['peak_mib']:.0f} MiB")

    names = list(scipy["drifted"])
    mismatched = [n for n in names if any(c["drifted"][n] != scipy["drifted"][n] for c in [*checks, single])]
    diffs = [abs(checks[0]["statistic"][n] - scipy["statistic"][n]) for n in names]
    bounds_hold = all(d <= profile["sketch_error"][n] + 1e-9 for d, n in zip(diffs, names, strict=True))
    margin = min(abs(scipy["statistic"][n] - THRESHOLD) for n in names)
    seconds = [c["seconds"] for c in checks]
    rows = [
        ["retrainer check, stored profile", f"{S.median(seconds):.2f}", S.spread(seconds, "{:.2f}"),
         f"{S.median([c['peak_mib'] for c in checks]):.0f}", f"{S.median([c['lifetime_peak_mib'] for c in checks]):.0f}",
         f"{S.median([c['rss_before_mib'] for c in checks]):.0f}", f"{checks[0]['threads']}"],
        ["  the same on one thread", f"{single['seconds']:.2f}", "-", f"{single['peak_mib']:.0f}",
         f"{single['lifetime_peak_mib']:.0f}", f"{single['rss_before_mib']:.0f}", "1"],
        ["plain scipy, raw arrays", f"{scipy['seconds']:.2f}", "-", f"{scipy['peak_mib']:.0f}",
         f"{scipy['lifetime_peak_mib']:.0f}", f"{scipy['rss_before_mib']:.0f}", "1"],
        ["profile build (once per version)", f"{profile['seconds']:.2f}", "-", f"{profile['peak_mib']:.0f}",
         f"{profile['lifetime_peak_mib']:.0f}", f"{profile['rss_before_mib']:.0f}", "1"],
    ]
    S.print_table(f"Drift check, {args.rows:,} x {args.features} numeric features, normalised Wasserstein >= {THRESHOLD}",
                  ["what", "median s", "min-max s", "step peak MiB", "process peak MiB", "data + imports MiB", "threads"],
                  rows)
    drifted = sum(scipy["drifted"].values())
    ratio = scipy["seconds"] / S.median(seconds)
    print(f"\nverdicts: {len(names) - len(mismatched)}/{len(names)} features identical to scipy's ({drifted} drifted; "
          f"dataset drift {checks[0]['dataset_drift']} vs {scipy['dataset_drift']}); largest |statistic difference| "
          f"{max(diffs):.2e} (each within the profile's sketch_error: {bounds_hold}); nearest statistic to the "
          f"threshold: {margin:.4f} away; scipy / check = {ratio:.1f}x")
    problems = []
    if mismatched or checks[0]["dataset_drift"] != scipy["dataset_drift"]:
        problems.append(f"MISMATCH: verdicts differ from scipy's for {', '.join(mismatched) or 'the dataset'}")
    if not bounds_hold:
        problems.append("MISMATCH: a statistic differs from scipy's by more than the profile's sketch_error")
    if S.median(seconds) > 5 or S.median([c["peak_mib"] for c in checks]) > 1536:
        problems.append("target missed: the check takes more than 5 s or 1.5 GB")
    S.write_result(NAME, {
        "machine": S.machine(), "rows": args.rows, "features": args.features, "threshold": THRESHOLD,
        "profile": {k: v for k, v in profile.items() if k != "sketch_error"}
                   | {"max_sketch_error": max(profile["sketch_error"].values())},
        "check": {"seconds": seconds, "median_seconds": S.median(seconds), "runs": [
            {k: v for k, v in c.items() if k not in ("statistic", "drifted")} for c in checks]},
        "check_one_thread": {k: v for k, v in single.items() if k not in ("statistic", "drifted")},
        "scipy": {k: v for k, v in scipy.items() if k not in ("statistic", "drifted")},
        "ratio_scipy_over_check": ratio,
        "agreement": {"identical_verdicts": len(names) - len(mismatched), "features": len(names), "drifted": drifted,
                      "max_abs_statistic_difference": max(diffs), "within_sketch_error": bounds_hold,
                      "nearest_to_threshold": margin,
                      "statistics": {n: [checks[0]["statistic"][n], scipy["statistic"][n]] for n in names}},
        "problems": problems,
    })
    for problem in problems:
        S.banner(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
