"""(c) Retrain overhead: the whole pipeline beside the bare fit + predict it wraps, at 100k and 1M rows.

For each size, that many observation rows for one ctr model (retrainer.demo.synthetic, 30 days, drift
in the last 10) are COPY'd into a fresh PostgreSQL schema (default; --db sqlite for a SQLite file).
training.max_rows is raised to the size so a run uses every row; hyper-parameters are the family
defaults (200 trees, depth 4, n_jobs 1). One untimed warm-up retrain makes a production champion, so
every timed run does the full work: load, validate, split, fit, score candidate AND champion, write
the artifact, one transaction. Then, side by side, `--repeats` times each, in rotating order:

  pipeline      services.retrain.retrain(session, settings, "ctr"): the columnar load on PostgreSQL
  json load     the same, with the load as it was before (JSON text, one json.loads; --no-json skips it)
  fit+predict   the family's fit on the same training frame + predict on the same holdout, same params:
                the best a user could do with the rows already in memory as pandas/numpy

The pipeline's steps are timed in place (wrappers around dataset.load/validate/split,
retrain._score, registry.load_estimator, artifacts.write; the fit time is the pipeline's own
training_duration_seconds); the rest is locking, policy and the final transaction.

Peak memory: the peak resident set (VmHWM) of a fresh child process per measurement, run
after the timed ones: one retrain (and one with the JSON load); fit + predict on the frames unpickled
(already in memory, as the baseline has them); and imports alone (the interpreter and libraries every process carries). RSS
rather than tracemalloc because most of the memory is outside Python's allocator (libpq's COPY
buffers, pandas' parser, XGBoost's DMatrix), which tracemalloc does not see.

    python -m benchmarks.retrain_overhead [--rows 100000,1000000] [--repeats 3] [--db postgresql|sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks import _support as S
from retrainer.config import Settings, load_settings
from retrainer.db import get_engine, session_scope
from retrainer.db.migrate import upgrade
from retrainer.db.records import ModelVersion, Observation
from retrainer.demo import synthetic
from retrainer.models.base import load_family
from retrainer.services import artifacts, blocks, dataset, registry, retrain, schema

NAME = "retrain_overhead"
MODEL = "ctr"
COLUMNS = ("model", "event_id", "features", "label", "event_time", "source", "created_at")


def load_rows(url: str, n_rows: int) -> float:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    rows = synthetic.generate(n_rows, end - timedelta(days=30), end, seed=11, drift_from=end - timedelta(days=10))
    records = [(MODEL, f"obs-{i}", json.dumps(r.features), r.label, r.event_time, "benchmark", end)
               for i, r in enumerate(rows)]
    t0 = time.perf_counter()
    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur, cur.copy(f"COPY observations ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for rec in records:
                    copy.write_row(rec)
            raw.commit()
        finally:
            raw.close()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE observations"))
    else:  # SQLite: Core executemany through the table's own types (JSON, UTC timestamps)
        with engine.begin() as conn:
            conn.execute(sa.insert(Observation.__table__),
                         [dict(zip(COLUMNS, (m, e, json.loads(f), lab, t, s, c))) for m, e, f, lab, t, s, c in records])
    return time.perf_counter() - t0


@contextmanager
def step_timers() -> Iterator[dict[str, float]]:
    """Wrap the pipeline's steps where services.retrain looks them up; restored afterwards."""
    spent: dict[str, float] = defaultdict(float)
    patches = [(dataset, "load"), (dataset, "validate"), (dataset, "split"), (retrain, "_score"),
               (registry, "load_estimator"), (artifacts, "write")]
    originals = [(mod, name, getattr(mod, name)) for mod, name in patches]

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return timed

    for mod, name, fn in originals:
        setattr(mod, name, wrap(name, fn))
    try:
        yield spent
    finally:
        for mod, name, fn in originals:
            setattr(mod, name, fn)


@contextmanager
def json_load() -> Iterator[None]:
    """The load as it was before the columnar one: no schema known beforehand, so every row's
    features come back as JSON text (services/dataset.py's JSON path)."""
    original = schema.known
    schema.known = lambda *_: None  # type: ignore[assignment]
    try:
        yield
    finally:
        schema.known = original


def run_pipeline(settings: Settings, legacy: bool = False) -> tuple[float, dict[str, Any], dict[str, float]]:
    with step_timers() as spent, (json_load() if legacy else nullcontext()):
        t0 = time.perf_counter()
        with session_scope(settings.database_url) as session:
            result = retrain.retrain(session, settings, MODEL, "manual")
        wall = time.perf_counter() - t0
    if result.get("status") not in ("retrained", "kept"):
        raise RuntimeError(f"retrain did not train: {result}")
    with session_scope(settings.database_url) as session:
        fit = session.get(ModelVersion, result["version_id"]).training_duration_seconds
    steps = dict(spent)
    steps["fit"] = fit
    # _score covers candidate and champion predictions; load_estimator (champion artifact) runs inside it
    steps["score_both"] = steps.pop("_score", 0.0)
    return wall, result, steps


def run_bare(settings: Settings, train: Any, holdout: Any) -> tuple[float, float, float]:
    cfg = settings.model(MODEL)
    x_holdout = dataset.features(holdout)
    t0 = time.perf_counter()
    estimator = load_family(cfg.family, cfg.params)
    estimator.fit(dataset.features(train), train[dataset.LABEL])
    t1 = time.perf_counter()
    estimator.predict(x_holdout)
    t2 = time.perf_counter()
    return t2 - t0, t1 - t0, t2 - t1


def make_settings(url: str, rows: int) -> Settings:
    return load_settings(
        var_dir=str(S.WORKDIR / "var"), database_url=url, artifact_dir=str(S.WORKDIR / "artifacts"),
        models={MODEL: {"family": "ctr", "training": {"max_rows": rows, "min_samples": 50},
                        "schedules": {"check": None, "retrain": None, "monitor": None}}},
    )


def child(what: str, url: str, rows: int, frames: str, artifacts_dir: str) -> int:
    """One measurement in this fresh process; prints its peak RSS in MiB."""
    settings = make_settings(url, rows).model_copy(update={"artifact_dir": artifacts_dir})
    if what in ("pipeline", "json"):
        with session_scope(url) as session, (json_load() if what == "json" else nullcontext()):
            result = retrain.retrain(session, settings, MODEL, "manual")
        assert result["status"] in ("retrained", "kept"), result
    elif what == "bare":
        with open(frames, "rb") as f:
            train, holdout = pickle.load(f)
        run_bare(settings, train, holdout)
    else:  # imports alone, as the other two have them
        import xgboost  # noqa: F401
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the forked parent's image.
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mib": int(hwm.split()[1]) / 1024}))
    return 0


def peak_memory(url: str, rows: int, train: Any, holdout: Any, with_json: bool) -> dict[str, float]:
    frames = S.WORKDIR / "frames.pkl"
    with open(frames, "wb") as f:
        pickle.dump((train, holdout), f, protocol=pickle.HIGHEST_PROTOCOL)
    out = {}
    for what in ("imports", "pipeline", *(["json"] if with_json else []), "bare"):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.retrain_overhead", "--child", what, "--url", url, "--rows", str(rows),
             "--frames", str(frames), "--artifacts", str(S.WORKDIR / "artifacts")],
            capture_output=True, text=True, check=True, env=os.environ | {"PYTHONPATH": str(Path.cwd())})
        out[what] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    frames.unlink()
    return out


def measure(url: str, n_rows: int, repeats: int, with_json: bool) -> dict[str, Any]:
    settings = make_settings(url, n_rows)
    upgrade(url)
    load_s = load_rows(url, n_rows)
    S.log(f"loaded {n_rows:,} rows in {load_s:.1f}s; warm-up retrain (makes the champion)")
    warm = run_pipeline(settings)
    S.log(f"warm-up: {warm[1]['status']} {warm[1]['version_id']} in {warm[0]:.2f}s (no blocks yet: the first run)")
    compact_s = 0.0
    if get_engine(url).dialect.name == "postgresql":  # the beat's compaction, off the retrain's path
        t0 = time.perf_counter()
        with session_scope(url) as session:
            written = blocks.compact(session, MODEL, grace=timedelta(0))
        compact_s = time.perf_counter() - t0
        S.log(f"compacted {written} block(s) in {compact_s:.1f}s")

    with session_scope(url) as session:  # the very frame the pipeline trains on
        used = schema.known(None, schema.production(session, MODEL))
        frame = dataset.validate(dataset.load(session, MODEL, n_rows, used), used).frame
    train, holdout, _ = dataset.split(frame, settings.model(MODEL).training.test_fraction)

    arms = ["pipeline", "bare"] + (["json"] if with_json else [])
    wall: dict[str, list[float]] = {a: [] for a in arms}
    steps: dict[str, list[dict[str, float]]] = {"pipeline": [], "json": []}
    bare_parts: list[tuple[float, float]] = []
    for i in range(repeats):
        for which in arms[i % len(arms):] + arms[:i % len(arms)]:  # rotate the order
            if which == "bare":
                total, fit, pred = run_bare(settings, train, holdout)
                wall["bare"].append(total)
                bare_parts.append((fit, pred))
                S.log(f"fit+predict #{i}: {total:.2f}s")
            else:
                seconds, result, spent = run_pipeline(settings, legacy=which == "json")
                wall[which].append(seconds)
                steps[which].append(spent)
                S.log(f"{which} #{i}: {seconds:.2f}s ({result['status']}, {result['samples']:,} train rows, "
                      f"{result['holdout']['rows']:,} holdout)")
    S.log("peak memory: a fresh process per measurement")
    memory = peak_memory(url, n_rows, train, holdout, with_json)

    med = {a: S.median(v) for a, v in wall.items()}
    step_names = ["load", "validate", "split", "fit", "score_both", "load_estimator", "write"]
    breakdown = {}
    for arm in ("pipeline", "json") if with_json else ("pipeline",):
        b = {k: S.median([s.get(k, 0.0) for s in steps[arm]]) for k in step_names}
        accounted = sum(v for k, v in b.items() if k != "load_estimator")  # load_estimator is inside score_both
        b["rest (lock, policy, transaction)"] = max(med[arm] - accounted, 0.0)
        breakdown[arm] = b
    return {
        "rows": len(frame), "train_rows": len(train), "holdout_rows": len(holdout), "bulk_load_seconds": load_s,
        "first_run_no_blocks_seconds": warm[0], "first_run_breakdown": warm[2], "compaction_seconds": compact_s,
        "seconds": {a: {"median": med[a], "runs": wall[a]} for a in arms},
        "fit_predict_parts_median": {"fit": S.median([f for f, _ in bare_parts]),
                                     "predict": S.median([p for _, p in bare_parts])},
        "ratio_over_fit_predict": {a: {"of_medians": med[a] / med["bare"],
                                       "paired_runs": [x / b for x, b in zip(wall[a], wall["bare"], strict=True)]}
                                   for a in arms if a != "bare"},
        "breakdown_median_seconds": breakdown,
        "peak_rss_mib": memory,
    }


def report(size: dict[str, Any], db_name: str, repeats: int) -> None:
    sec, ratio = size["seconds"], size["ratio_over_fit_predict"]
    rows = [["whole pipeline services.retrain.retrain", f"{sec['pipeline']['median']:.2f}",
             S.spread(sec["pipeline"]["runs"], "{:.2f}"), f"{ratio['pipeline']['of_medians']:.2f}x",
             S.spread(ratio["pipeline"]["paired_runs"], "{:.2f}")]]
    if "json" in sec:
        rows.append(["the same with the JSON load (before)", f"{sec['json']['median']:.2f}",
                     S.spread(sec["json"]["runs"], "{:.2f}"), f"{ratio['json']['of_medians']:.2f}x",
                     S.spread(ratio["json"]["paired_runs"], "{:.2f}")])
    rows.append(["fit + predict alone (same frame, params)", f"{sec['bare']['median']:.2f}",
                 S.spread(sec["bare"]["runs"], "{:.2f}"), "1.00x", ""])
    S.print_table(f"one retrain on {size['rows']:,} observations ({size['train_rows']:,} train / "
                  f"{size['holdout_rows']:,} holdout), {db_name}, median of {repeats}",
                  ["what", "median s", "min–max s", "÷ fit+predict", "paired"], rows)
    pipe = sec["pipeline"]["median"]
    S.print_table("pipeline breakdown (median of the timed runs)", ["step", "median s", "share"],
                  [[k, f"{v:.3f}", f"{100 * v / pipe:.0f}%"] for k, v in size["breakdown_median_seconds"]["pipeline"].items()])
    mem = size["peak_rss_mib"]
    S.print_table("peak RSS of a fresh process (MiB)", ["process", "peak MiB", "above imports"],
                  [[k, f"{v:.0f}", f"{v - mem['imports']:.0f}" if k != "imports" else ""] for k, v in mem.items()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--no-json", action="store_true", help="skip the JSON-load arm (the 'before' figures)")
    parser.add_argument("--child", choices=("pipeline", "json", "bare", "imports"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--frames", help=argparse.SUPPRESS)
    parser.add_argument("--artifacts", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.url, int(args.rows), args.frames, args.artifacts)
    sizes = [int(n) for n in args.rows.split(",")]
    info = S.machine()
    db_name = "SQLite file (WAL)" if args.db == "sqlite" else "PostgreSQL " + S.postgres_version()
    results: dict[str, Any] = {}
    for n_rows in sizes:
        S.log(f"{NAME}: {n_rows:,} observations, {args.repeats} repeats, {db_name}")
        if args.db == "sqlite":
            path = S.WORKDIR / f"retrain-{n_rows}.db"
            results[str(n_rows)] = measure(f"sqlite:///{path}", n_rows, args.repeats, not args.no_json)
        else:
            with S.postgres_schema(f"retrain{n_rows}") as url:
                results[str(n_rows)] = measure(url, n_rows, args.repeats, not args.no_json)
        report(results[str(n_rows)], db_name, args.repeats)
    info["loadavg_at_end"] = S.loadavg()
    path = S.write_result(NAME if args.db == "postgresql" else f"{NAME}_sqlite", {
        "benchmark": NAME, "database": db_name, "repeats": args.repeats,
        "params": "ctr family defaults (200 trees, depth 4, learning_rate 0.1, n_jobs 1)",
        "memory": "peak RSS (/proc/self/status VmHWM) of a fresh child process per measurement",
        "sizes": results, "machine": info,
    })
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
