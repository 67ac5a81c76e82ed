"""(c) Retrain overhead: the whole pipeline beside the bare fit + predict it wraps.

100,000 observation rows for one ctr model (retrainer.demo.synthetic, 30 days, drift in the last 10),
COPY'd into PostgreSQL (default; --db sqlite for a SQLite file). training.max_rows is raised to
100,000 so a run uses every row; hyper-parameters are the family defaults (200 trees, depth 4,
n_jobs 1). One untimed warm-up retrain makes a production champion, so every timed run does the
full work: load, validate, split, fit, score candidate AND champion, write the artifact, one
transaction. Then, side by side, 3 times each, alternating:

  pipeline     services.retrain.retrain(session, settings, "ctr")
  fit+predict  the family's fit on the same training frame + predict on the same holdout, same params

The pipeline's steps are timed in place (wrappers around dataset.load/validate/split,
retrain._score, registry.load_estimator, artifacts.write; the fit time is the pipeline's own
training_duration_seconds); the rest is locking, policy and the final transaction.

    python -m benchmarks.retrain_overhead [--rows 100000] [--repeats 3] [--db postgresql|sqlite]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from benchmarks import _support as S
from retrainer.config import Settings, load_settings
from retrainer.db import get_engine, session_scope
from retrainer.db.migrate import upgrade
from retrainer.db.records import ModelVersion, Observation
from retrainer.demo import synthetic
from retrainer.models.base import load_family
from retrainer.services import artifacts, dataset, registry, retrain

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


def run_pipeline(settings: Settings) -> tuple[float, dict[str, Any], dict[str, float]]:
    with step_timers() as spent:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args(argv)
    info = S.machine()

    @contextmanager
    def database() -> Iterator[str]:
        if args.db == "sqlite":
            yield f"sqlite:///{S.WORKDIR / 'retrain.db'}"
        else:
            with S.postgres_schema("retrain") as url:
                yield url

    db_name = "SQLite file (WAL)" if args.db == "sqlite" else "PostgreSQL " + S.postgres_version()
    S.log(f"{NAME}: {args.rows:,} observations, {args.repeats} repeats, {db_name}")
    with database() as url:
        upgrade(url)
        settings = load_settings(
            var_dir=str(S.WORKDIR / "var"), database_url=url, artifact_dir=str(S.WORKDIR / "artifacts"),
            models={MODEL: {"family": "ctr", "training": {"max_rows": args.rows, "min_samples": 50},
                            "schedules": {"check": None, "retrain": None, "monitor": None}}},
        )
        load_s = load_rows(url, args.rows)
        S.log(f"loaded {args.rows:,} rows in {load_s:.1f}s; warm-up retrain (makes the champion)")
        warm = run_pipeline(settings)
        S.log(f"warm-up: {warm[1]['status']} {warm[1]['version_id']} in {warm[0]:.2f}s")

        with session_scope(url) as session:  # the very frame the pipeline trains on
            frame = dataset.validate(dataset.load(session, MODEL, args.rows), None).frame
        train, holdout, _ = dataset.split(frame, settings.model(MODEL).training.test_fraction)

        pipeline: list[float] = []
        bare: list[float] = []
        bare_fit: list[float] = []
        bare_predict: list[float] = []
        steps: list[dict[str, float]] = []
        outcomes: list[str] = []
        for i in range(args.repeats):
            for which in (("pipeline", "bare") if i % 2 == 0 else ("bare", "pipeline")):
                if which == "pipeline":
                    wall, result, spent = run_pipeline(settings)
                    pipeline.append(wall)
                    steps.append(spent)
                    outcomes.append(result["status"])
                    S.log(f"pipeline #{i}: {wall:.2f}s ({result['status']}, {result['samples']:,} train rows, "
                          f"{result['holdout']['rows']:,} holdout)")
                else:
                    total, fit, pred = run_bare(settings, train, holdout)
                    bare.append(total)
                    bare_fit.append(fit)
                    bare_predict.append(pred)
                    S.log(f"fit+predict #{i}: {total:.2f}s")
        rows_used = len(frame)
        n_train, n_holdout = len(train), len(holdout)

    med_pipe, med_bare = S.median(pipeline), S.median(bare)
    ratio = med_pipe / med_bare
    paired = [p / b for p, b in zip(pipeline, bare, strict=True)]
    step_names = ["load", "validate", "split", "fit", "score_both", "load_estimator", "write"]
    step_med = {k: S.median([s.get(k, 0.0) for s in steps]) for k in step_names}
    accounted = sum(v for k, v in step_med.items() if k != "load_estimator")  # load_estimator is inside score_both
    step_med["rest (lock, policy, transaction)"] = max(med_pipe - accounted, 0.0)

    S.print_table(
        f"one retrain on {rows_used:,} observations ({n_train:,} train / {n_holdout:,} holdout), "
        f"{db_name}, median of {args.repeats}",
        ["what", "median s", "min–max s"],
        [["whole pipeline services.retrain.retrain", f"{med_pipe:.2f}", S.spread(pipeline, "{:.2f}")],
         ["fit + predict alone (same frame, params)", f"{med_bare:.2f}", S.spread(bare, "{:.2f}")],
         ["ratio pipeline / (fit + predict)", f"{ratio:.2f}x", S.spread(paired, "{:.2f}")]],
    )
    S.print_table(
        "pipeline breakdown (median of the timed runs)", ["step", "median s", "share"],
        [[k, f"{v:.3f}", f"{100 * v / med_pipe:.0f}%"] for k, v in step_med.items()]
        + [["(bare fit alone / predict alone)", f"{S.median(bare_fit):.3f} / {S.median(bare_predict):.3f}", ""]],
    )
    info["loadavg_at_end"] = S.loadavg()
    path = S.write_result(NAME if args.db == "postgresql" else f"{NAME}_sqlite", {
        "benchmark": NAME, "database": db_name, "rows": rows_used, "train_rows": n_train, "holdout_rows": n_holdout,
        "params": "ctr family defaults (200 trees, depth 4, learning_rate 0.1, n_jobs 1)", "repeats": args.repeats,
        "bulk_load_seconds": load_s,
        "pipeline_seconds": {"median": med_pipe, "runs": pipeline, "outcomes": outcomes},
        "fit_predict_seconds": {"median": med_bare, "runs": bare, "fit_median": S.median(bare_fit),
                                "predict_median": S.median(bare_predict)},
        "ratio_pipeline_over_fit_predict": {"of_medians": ratio, "paired_runs": paired},
        "breakdown_median_seconds": step_med,
        "machine": info,
    })
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
