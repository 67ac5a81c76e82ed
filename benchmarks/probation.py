"""(h) Probation calibration: how often the always-valid test of services/sequential.py rolls back a
version that is not worse, how soon it catches one that is, and what a daily fixed z-test does beside it.
Pure computation, no servers.

Each simulated probation draws the previous version's record (`--baseline` losses: a week of outcomes
by default, and a small record of 500) and up to 5,000 outcomes of the new version, whose mean loss is
`ratio` times the previous one's:
  1.00        truly equal: every rollback is a false one
  1.05        exactly at the tolerance (5 %), the edge of "not worse": the hardest case for calibration
  1.10, 1.20, 1.50   worse by 10, 20, 50 %: the share caught and the outcomes it took
Losses: 0/1 (error rate 0.2, a classifier), |N(0,1)| and lognormal(0,1) absolute errors (a regression's,
heavy-tailed); a worse version is the same distribution scaled (or its error rate raised).

The sequential test runs as the service runs it (the configured defaults: tolerance 5 %, alpha 0.05,
min_outcomes 30, the horizon of a 30-5,000-outcome probation) and is looked at after every outcome:
one `probation_test` call judges every prefix. Beside it, on the same draws, the test people write by
hand: a one-sided two-sample z-test of the same hypothesis at the same alpha, looked at once a day, every
100 outcomes for 30 days. A robustness table runs the null edge (1.05) on harder losses and small records.
Rates carry Wilson 95 % intervals. Exit 1 when a false rollback rate of the sequential test exceeds alpha.

    python -m benchmarks.probation [--reps 5000] [--seed 11]   # ~2 min
    python -m benchmarks.probation --quick                     # 200 repetitions, a smoke test (no JSON written)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import norm

from benchmarks import _support
from retrainer.config import Probation
from retrainer.services import sequential

NAME = "probation"
RATIOS = (1.0, 1.05, 1.10, 1.20, 1.50)
BASELINES = (5000, 500)
DAY = 100  # outcomes a day for the daily z-test
DAYS = 30

Draw = Callable[[np.random.Generator, int, float], np.ndarray]
LOSSES: dict[str, Draw] = {
    "0/1 (error rate 0.2)": lambda r, n, k: (r.random(n) < 0.2 * k).astype(float),
    "|N(0,1)|": lambda r, n, k: np.abs(r.normal(0.0, k, n)),
    "lognormal(0,1)": lambda r, n, k: r.lognormal(0.0, 1.0, n) * k,
}
HARDER: dict[str, Draw] = {  # the null edge only: rarer errors, heavier tails
    "0/1 (error rate 0.02)": lambda r, n, k: (r.random(n) < 0.02 * k).astype(float),
    "lognormal(0,1.5)": lambda r, n, k: r.lognormal(0.0, 1.5, n) * k,
    "|t(3)|": lambda r, n, k: np.abs(r.standard_t(3, n)) * k,
}
HARDER_BASELINES = (100, 500, 5000)




def daily_z(new: np.ndarray, prev: np.ndarray, tolerance_pct: float, alpha: float, exact: bool = False) -> int | None:
    """The first day (1..DAYS) on which a one-sided two-sample z-test of mean_new > c * mean_prev rejects at
    `alpha`, on all outcomes so far, or None. `exact`: the one-sample test that takes the previous mean as
    known (its standard error left out), as a hand-written check often does."""
    c = 1 + tolerance_pct / 100
    n = np.arange(1, DAYS + 1) * DAY
    x = new[: DAYS * DAY]
    total, squares = np.cumsum(x)[n - 1], np.cumsum(x * x)[n - 1]
    mean = total / n
    var = np.maximum(squares - n * mean * mean, 0.0) / (n - 1)
    se = np.sqrt(var / n + (0.0 if exact else c * c * prev.var(ddof=1) / prev.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (mean - c * prev.mean()) / se, 0.0)
    hit = np.flatnonzero(z > norm.ppf(1 - alpha))
    return int(hit[0]) + 1 if hit.size else None


def simulate(draw: Draw, ratio: float, baseline: int, reps: int, rng: np.random.Generator, cfg: Probation,
             horizon: float) -> dict[str, Any]:
    caught_at: list[int] = []
    caught_month = 0
    z_days: list[int] = []
    z_exact = 0
    for _ in range(reps):
        prev = draw(rng, baseline, 1.0)
        new = draw(rng, cfg.max_outcomes, ratio)
        verdict = sequential.probation_test(new, prev, cfg.tolerance_pct, cfg.alpha, cfg.min_outcomes, horizon)
        if verdict.crossed_at is not None:
            caught_at.append(verdict.crossed_at)
            caught_month += verdict.crossed_at <= DAYS * DAY
        if (day := daily_z(new, prev, cfg.tolerance_pct, cfg.alpha)) is not None:
            z_days.append(day)
        z_exact += daily_z(new, prev, cfg.tolerance_pct, cfg.alpha, exact=True) is not None
    out: dict[str, Any] = {"reps": reps, "sequential": _rate(len(caught_at), reps),
                           "sequential_within_30_days": _rate(caught_month, reps),
                           "z_daily": _rate(len(z_days), reps), "z_daily_exact_baseline": _rate(z_exact, reps)}
    if caught_at:
        out["sequential"] |= {"median_outcomes": float(np.median(caught_at)),
                              "quartiles_outcomes": np.quantile(caught_at, [0.25, 0.75]).tolist()}
    if z_days:
        out["z_daily"] |= {"median_outcomes": float(np.median(z_days)) * DAY}
    return out


def simulate_paired(draw: Draw, ratio: float, drift: float, reps: int, rng: np.random.Generator, cfg: Probation,
                    horizon: float) -> dict[str, Any]:
    """The paired comparison against the record one, on the same probations. Both versions serve the same
    outcomes; the new version's loss on an outcome is the previous one's (half the time: the outcomes both
    get right or wrong alike) or a fresh draw, times `ratio`, so its mean is exactly `ratio` times the
    previous one's on the same outcomes. `drift` multiplies every loss after the promotion: the world got
    harder for both, and only the record (outcomes from before) sees the new version as worse."""
    paired_at: list[int] = []
    record_at: list[int] = []
    for _ in range(reps):
        record = draw(rng, 5000, 1.0)
        prev_now = draw(rng, cfg.max_outcomes, drift)
        same = rng.random(cfg.max_outcomes) < 0.5
        new_now = ratio * np.where(same, prev_now, draw(rng, cfg.max_outcomes, drift))
        paired = sequential.paired_test(new_now, prev_now, cfg.tolerance_pct, cfg.alpha, cfg.min_outcomes, horizon)
        against_record = sequential.probation_test(new_now, record, cfg.tolerance_pct, cfg.alpha, cfg.min_outcomes,
                                                   horizon)
        if paired.crossed_at is not None:
            paired_at.append(paired.crossed_at)
        if against_record.crossed_at is not None:
            record_at.append(against_record.crossed_at)
    out = {"reps": reps, "paired": _rate(len(paired_at), reps), "record": _rate(len(record_at), reps)}
    for key, at in (("paired", paired_at), ("record", record_at)):
        if at:
            out[key] |= {"median_outcomes": float(np.median(at))}
    return out


def _rate(hits: int, n: int) -> dict[str, Any]:
    low, high = _support.wilson(hits, n)
    return {"rate": hits / n, "hits": hits, "wilson95": [low, high]}


def _pct(r: dict[str, Any]) -> str:
    low, high = r["wilson95"]
    return f"{100 * r['rate']:.1f}% ({100 * low:.1f}–{100 * high:.1f})"


def _median(r: dict[str, Any]) -> str:
    return f"{r['median_outcomes']:,.0f}" if "median_outcomes" in r else "–"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5000, help="simulated probations per scenario")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="200 repetitions: a smoke test")
    args = parser.parse_args()
    from benchmarks import _support as S

    reps = 200 if args.quick else args.reps
    cfg = Probation()
    horizon = sequential.horizon_for(cfg.min_outcomes, cfg.max_outcomes)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    results: dict[str, Any] = {"machine": S.machine(), "reps": reps, "seed": args.seed, "quick": args.quick,
                               "config": cfg.model_dump(), "horizon": horizon, "z_test": {"every": DAY, "days": DAYS},
                               "scenarios": {}, "robustness": {}}
    problems: list[str] = []
    for baseline in BASELINES:
        rows = []
        for loss, draw in LOSSES.items():
            for ratio in RATIOS:
                r = simulate(draw, ratio, baseline, reps, rng, cfg, horizon)
                results["scenarios"][f"{loss} | baseline {baseline} | ratio {ratio}"] = r
                null = ratio <= 1 + cfg.tolerance_pct / 100
                rows.append([loss, f"{ratio:.2f}" + (" (null)" if null else ""), _pct(r["sequential"]),
                             _median(r["sequential"]), _pct(r["sequential_within_30_days"]), _pct(r["z_daily"]),
                             _median(r["z_daily"]), _pct(r["z_daily_exact_baseline"])])
                if null and r["sequential"]["rate"] > cfg.alpha:
                    problems.append(f"{loss}, baseline {baseline}, ratio {ratio}: false rollbacks "
                                    f"{100 * r['sequential']['rate']:.1f} % > alpha {100 * cfg.alpha:g} %")
            S.log(f"baseline {baseline}: {loss} done, {time.perf_counter() - t0:.0f} s")
        S.print_table(f"Previous version's record: {baseline:,} outcomes; {reps} probations per row. Rollbacks (Wilson "
                      f"95 %) and the outcomes they took (median); null rows: every rollback is a false one",
                      ["losses", "new / previous mean", f"sequential, ≤ {cfg.max_outcomes:,} outcomes",
                       "median outcomes", f"sequential, first {DAYS * DAY:,}", f"daily z-test, {DAYS} looks",
                       "z: median outcomes", "z, previous mean as exact"], rows)
    rows = []
    for loss, draw in HARDER.items():
        for baseline in HARDER_BASELINES:
            r = simulate(draw, 1 + cfg.tolerance_pct / 100, baseline, reps, rng, cfg, horizon)
            results["robustness"][f"{loss} | baseline {baseline}"] = r
            rows.append([loss, f"{baseline:,}", _pct(r["sequential"]), _pct(r["z_daily"]),
                         _pct(r["z_daily_exact_baseline"])])
            if r["sequential"]["rate"] > cfg.alpha:
                problems.append(f"{loss}, baseline {baseline}, null edge: false rollbacks "
                                f"{100 * r['sequential']['rate']:.1f} % > alpha")
    S.print_table("Robustness at the null edge (new = 1.05 x previous): false rollbacks",
                  ["losses", "previous record", "sequential", "daily z-test", "z, previous mean as exact"], rows)
    rows = []
    results["paired"] = {}
    for loss, draw in LOSSES.items():
        for ratio, drift in ((1.0, 1.0), (1.0, 3.0), (1 + cfg.tolerance_pct / 100, 1.0), (1.2, 1.0), (1.5, 1.0)):
            r = simulate_paired(draw, ratio, drift, reps, rng, cfg, horizon)
            results["paired"][f"{loss} | ratio {ratio} | drift {drift}"] = r
            null = ratio <= 1 + cfg.tolerance_pct / 100
            rows.append([loss, f"{ratio:.2f}" + (" (null)" if null else ""), f"{drift:g}x", _pct(r["paired"]),
                         _median(r["paired"]), _pct(r["record"]), _median(r["record"])])
            if null and r["paired"]["rate"] > cfg.alpha:
                problems.append(f"paired, {loss}, ratio {ratio}, drift {drift}: false rollbacks "
                                f"{100 * r['paired']['rate']:.1f} % > alpha")
        S.log(f"paired: {loss} done, {time.perf_counter() - t0:.0f} s")
    S.print_table("The paired comparison (the previous artifact scores the same outcomes; what probation uses) "
                  "against the record one (the previous version's own outcomes before the promotion); drift: every "
                  "loss after the promotion multiplied, for both versions",
                  ["losses", "new / previous on the same outcomes", "world after promotion", "paired: rollbacks",
                   "median outcomes", "record: rollbacks", "median outcomes"], rows)
    results["seconds"] = time.perf_counter() - t0
    results["problems"] = problems
    where = "not written (--quick)" if args.quick else f"in {S.write_result(NAME, results)}"
    print(f"\n{reps} probations per scenario in {results['seconds']:.0f} s; results {where}")
    for problem in problems:
        S.banner(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
