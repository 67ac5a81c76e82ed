"""(j) replay: retrainer's loop on river's drifting streams and bundled real streams, beside a model never
retrained, blind periodic retraining and river's own online learners on the same rows.

Every stream is written to a CSV with a time column (a row a minute) and replayed with the command a
user runs, `retrainer replay --csv FILE --label y --time at --family F --json` (a real worker on the
embedded default, checks in simulated time; retrainer/replay/). The online learner, river's Adaptive
Random Forest (`forest.ARFClassifier`, `forest.ARFRegressor`, default settings, seed 42), learns the
same rows test-then-train from the first row on; every score counts the same rows, those after the
warm-up. The warm-up is min(1,000, rows / 5) rows, and the periodic baseline refits every warm-up's
worth of rows.

Streams (river 0.22):
- sea: SEA, 10 % label noise, variants 0 -> 1 -> 2 -> 3 at 1/4, 1/2 and 3/4 of the rows (abrupt:
  ConceptDriftStream over 50 rows);
- agrawal: Agrawal, classification functions 0 -> 1 -> 2 -> 3 at the same points (abrupt);
- hyperplane: a rotating hyperplane, 10 features, 2 drifting, mag_change 0.001, 5 % noise (gradual);
- friedman: FriedmanDrift, local expanding abrupt drift ("lea") at the same points (regression);
- bananas, phishing, image_segments (classification) and trump_approval (regression): the real
  streams river bundles (Elec2 and the others it downloads are skipped: no network here).

river 0.22 pins pandas < 3 and retrainer runs on pandas 3, so this script runs in a venv of its own and
calls retrainer with the project's venv (--python):

    python3.11 -m venv .venv-bench && .venv-bench/bin/pip install river==0.22.0
    .venv-bench/bin/python -m benchmarks.replay                       # ~25 min, every stream
    .venv-bench/bin/python -m benchmarks.replay --rows 3000 --streams sea   # a quick look

Writes benchmarks/results/replay.json and prints the table of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START = datetime(2024, 1, 1, tzinfo=UTC)
SEED = 42


@dataclass(frozen=True)
class Spec:
    family: str  # retrainer's family for the stream
    rows: Callable[[int], Iterable[tuple[dict[str, Any], Any]]]  # n -> (features, label) pairs
    synthetic: bool  # its size is --rows; a real stream is replayed whole


def _abrupt(streams: list[Any], n: int) -> Any:
    """streams[0], then each next one from 1/k of the rows on (k = len(streams)), abruptly."""
    from river.datasets import synth

    step = n // len(streams)
    # A 50-row change (step / 100 for longer streams): river's sigmoid overflows math.exp when
    # 4 * position / width passes ~709, which width 1 does 177 rows into a stream.
    width = max(50, step // 100)
    stream = streams[-1]
    for earlier in reversed(streams[:-1]):  # a nested stream counts its position from its own start
        stream = synth.ConceptDriftStream(stream=earlier, drift_stream=stream, position=step, width=width, seed=SEED)
    return stream


def _sea(n: int) -> Iterable[tuple[dict[str, Any], Any]]:
    from river.datasets import synth

    return _abrupt([synth.SEA(variant=v, noise=0.1, seed=SEED + v) for v in range(4)], n)


def _agrawal(n: int) -> Iterable[tuple[dict[str, Any], Any]]:
    from river.datasets import synth

    return _abrupt([synth.Agrawal(classification_function=f, seed=SEED + f) for f in range(4)], n)


def _hyperplane(n: int) -> Iterable[tuple[dict[str, Any], Any]]:
    from river.datasets import synth

    return synth.Hyperplane(seed=SEED, n_features=10, n_drift_features=2, mag_change=0.001, noise_percentage=0.05,
                            sigma=0.1)


def _friedman(n: int) -> Iterable[tuple[dict[str, Any], Any]]:
    from river.datasets import synth

    return synth.FriedmanDrift(drift_type="lea", position=(n // 4, n // 2, 3 * n // 4), seed=SEED)


def _bundled(name: str) -> Callable[[int], Iterable[tuple[dict[str, Any], Any]]]:
    def rows(n: int) -> Iterable[tuple[dict[str, Any], Any]]:
        from river import datasets

        return getattr(datasets, name)()

    return rows


STREAMS = {
    "sea": Spec("classifier", _sea, True),
    "agrawal": Spec("classifier", _agrawal, True),
    "hyperplane": Spec("classifier", _hyperplane, True),
    "friedman": Spec("regressor", _friedman, True),
    "bananas": Spec("classifier", _bundled("Bananas"), False),
    "phishing": Spec("classifier", _bundled("Phishing"), False),
    "image_segments": Spec("classifier", _bundled("ImageSegments"), False),
    "trump_approval": Spec("regressor", _bundled("TrumpApproval"), False),
}


def materialize(spec: Spec, n: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """The stream's first n rows (a real stream: all of it), feature names as text, class labels as the
    numbers 0..k-1 (in sorted order of the stream's own labels)."""
    pairs = list(islice(iter(spec.rows(n)), n) if spec.synthetic else spec.rows(n))
    xs = [{(k if isinstance(k, str) else f"x{k}"): v for k, v in x.items()} for x, _ in pairs]
    ys = [y for _, y in pairs]
    if spec.family == "classifier":
        classes = {c: i for i, c in enumerate(sorted(set(ys), key=str))}
        ys = [classes[y] for y in ys]
    return xs, (ys if spec.family == "classifier" else [float(y) for y in ys])


def write_csv(path: Path, xs: list[dict[str, Any]], ys: list[Any]) -> None:
    names = list(xs[0])
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*names, "y", "at"])
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            out.writerow([*(x[k] for k in names), y, (START + timedelta(minutes=i)).isoformat()])


def online(family: str, xs: list[dict[str, Any]], ys: list[Any], warmup: int) -> tuple[str, float, float]:
    """River's Adaptive Random Forest, test-then-train on every row; scored on the rows after the warm-up."""
    from river import forest

    learner = forest.ARFClassifier(seed=SEED) if family == "classifier" else forest.ARFRegressor(seed=SEED)
    t0, total, count = time.perf_counter(), 0.0, 0
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        predicted = learner.predict_one(x)
        if i >= warmup:
            total += (predicted == y) if family == "classifier" else abs((predicted or 0.0) - y)
            count += 1
        learner.learn_one(x, y)
    return type(learner).__name__, total / count, time.perf_counter() - t0


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs: dotted keys into the model's configuration, values read as JSON (numbers,
    true/false, null) or else as text."""
    sets = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set {item!r}: write KEY=VALUE, e.g. promotion.deploy=refit")
        try:
            sets[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            sets[key.strip()] = text
    return sets


def model_config(python: list[str], family: str, classes: int, warmup: int, sets: dict[str, Any]) -> dict[str, Any]:
    """The configuration replay generates for this stream (retrainer/replay/environment.py, asked of
    retrainer's own venv), with the --set values in place."""
    code = ("import json, sys; from retrainer.models.base import family_class; "
            "from retrainer.replay.environment import model_config; f, c, w = sys.argv[1], *map(int, sys.argv[2:]); "
            "print(json.dumps(model_config(f, family_class(f).metric_spec.live, c, w)))")
    done = subprocess.run([*python, "-c", code, family, str(classes), str(warmup)], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    cfg = json.loads(done.stdout)
    for key, value in sets.items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


def replay(python: list[str], csv_path: Path, family: str, warmup: int, config: Path | None = None,
           ) -> dict[str, Any]:
    args = [*python, "-m", "retrainer.cli", "replay", "--csv", str(csv_path), "--label", "y", "--time", "at",
            "--family", family, "--warmup", str(warmup), "--every-rows", str(warmup), "--json",
            *(["--config", str(config)] if config else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAINER_", "CELERY_"))}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"retrainer replay failed on {csv_path.name}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def better_or_equal(metric: str, a: float, b: float) -> bool:
    return a >= b if metric == "accuracy" else a <= b


def run_stream(name: str, spec: Spec, rows: int, python: list[str], workdir: Path,
               sets: dict[str, Any] | None = None, with_online: bool = True) -> dict[str, Any]:
    xs, ys = materialize(spec, rows)
    warmup = min(1000, len(xs) // 5)
    csv_path = workdir / f"{name}.csv"
    write_csv(csv_path, xs, ys)
    learner, online_score, online_seconds = online(spec.family, xs, ys, warmup) if with_online else ("-", 0.0, 0.0)
    print(f"{name}: {len(xs):,} rows; {learner} {online_score:.4f} in {online_seconds:.0f} s; replaying …",
          file=sys.stderr, flush=True)
    config = None
    if sets:  # the generated configuration with these settings changed, given as the model of a --config file
        cfg = model_config(python, spec.family, len(set(ys)) if spec.family == "classifier" else 0, warmup, sets)
        config = workdir / f"{name}-{os.getpid()}-{time.monotonic_ns()}.yaml"
        config.write_text(json.dumps({  # JSON is YAML; a fresh database per replay
            "database_url": f"sqlite:///{config.with_suffix('.db')}", "broker_url": "filesystem://",
            "result_backend": f"db+sqlite:///{config.with_suffix('.results.db')}", "models": {"replay": cfg}}))
    report = replay(python, csv_path, spec.family, warmup, config)
    periodic = report["baselines"]["periodic"]
    metric = report["metric"]
    return {
        "stream": name, "rows": len(xs), "replayed": report["rows"], "warmup": warmup, "family": spec.family,
        "metric": metric, "retrainer": {k: report[k] for k in ("score", "retrains", "promotions", "rollbacks")},
        "never": report["baselines"]["never"]["score"],
        "periodic": {"score": periodic["score"], "retrains": periodic["retrains"], "every_rows": periodic["every_rows"]},
        "online": {"learner": learner, "score": online_score, "seconds": round(online_seconds, 1)},
        "seconds": report["seconds"],
        "target": {
            "as_accurate_as_periodic": better_or_equal(metric, report["score"], periodic["score"]),
            "at_most_a_fifth_of_its_retrains": report["retrains"] * 5 <= periodic["retrains"],
            "as_accurate_as_online": better_or_equal(metric, report["score"], online_score),
        },
        "runs": report["runs"], "events": report["events"], "checks": report["checks"],
        "accuracy_checks": report.get("accuracy_checks", []), "decisions": report.get("decisions", []),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [("| stream | rows | metric | retrainer | retrains | promotions | rollbacks | never | periodic | "
              "periodic retrains | river ARF | seconds |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        loop = r["retrainer"]
        lines.append(f"| {r['stream']} | {r['replayed']:,} | {r['metric']} | {loop['score']:.4f} | {loop['retrains']} | "
                     f"{loop['promotions']} | {loop['rollbacks']} | {r['never']:.4f} | {r['periodic']['score']:.4f} | "
                     f"{r['periodic']['retrains']} | {r['online']['score']:.4f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def merge_variant(path: Path, name: str, head: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """The variant's per-stream figures (no run detail) under its name in the variants file, beside the
    variants already there."""
    keys = ("stream", "replayed", "metric", "retrainer", "never", "periodic", "online", "seconds", "runs")
    variants = json.loads(path.read_text())["variants"] if path.exists() else {}
    variants[name] = head | {"streams": [{k: r[k] for k in keys} for r in results]}
    path.write_text(json.dumps({"benchmark": "replay_variants", "variants": variants,
                                "comparison": compare(variants)}, indent=2) + "\n")


def compare(variants: dict[str, Any]) -> dict[str, Any]:
    """Per stream the loop's score under each variant and their ranks (1: best; ties share the mean
    rank), and each variant's mean rank over the streams every variant replayed."""
    scores: dict[str, dict[str, float]] = {}
    metric: dict[str, str] = {}
    for name, v in variants.items():
        for s in v["streams"]:
            scores.setdefault(s["stream"], {})[name] = s["retrainer"]["score"]
            metric[s["stream"]] = s["metric"]
    streams, ranks = {}, {name: [] for name in variants}
    for stream, by in scores.items():
        if len(by) < len(variants):
            continue
        sign = -1 if metric[stream] == "accuracy" else 1  # a rank counts from the best
        rank = {n: 1 + sum(sign * o < sign * x for o in by.values()) + (sum(o == x for o in by.values()) - 1) / 2
                for n, x in by.items()}
        streams[stream] = {"metric": metric[stream], "score": by, "rank": rank}
        for n, r in rank.items():
            ranks[n].append(r)
    return {"streams": streams, "mean_rank": {n: sum(r) / len(r) for n, r in ranks.items() if r}}


def loop_version() -> dict[str, str]:
    """The commit and a digest of the files that decide what the loop does (the policy, the checks, the
    pipeline): figures from a working tree with changes are tied to the code that produced them."""
    import hashlib

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    files = ["services/policy.py", "services/probation.py", "services/retrain.py", "services/accuracy.py",
             "services/triggers.py", "retrainer/config/promotion.py", "retrainer/config/triggers.py"]
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in files if (ROOT / f).exists())).hexdigest()
    return {"commit": head.stdout.strip(), "files_sha256": digest[:16]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of each synthetic stream (default 20,000)")
    parser.add_argument("--streams", default=",".join(STREAMS), help=f"comma-separated, of: {', '.join(STREAMS)}")
    default_python = ROOT / ".venv" / "bin" / "python"
    parser.add_argument("--python", default=str(default_python if default_python.exists() else sys.executable),
                        help="the Python of retrainer's own venv (default: .venv/bin/python)")
    parser.add_argument("--output", type=Path, default=RESULTS / "replay.json")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a model setting changed from replay's generated configuration, e.g. "
                             "promotion.deploy=refit (repeatable; values as JSON, null unsets)")
    parser.add_argument("--variant", help="a name for this configuration: its per-stream figures are also merged "
                                          "into --variants-file under it")
    parser.add_argument("--variants-file", type=Path, default=RESULTS / "replay_variants.json")
    args = parser.parse_args(argv)
    sets = parse_sets(args.sets)
    names = [s.strip() for s in args.streams.split(",") if s.strip()]
    if unknown := sorted(set(names) - set(STREAMS)):
        parser.error(f"unknown stream(s): {', '.join(unknown)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="retrainer-bench-replay-") as workdir:
        for name in names:
            results.append(run_stream(name, STREAMS[name], args.rows, [args.python], Path(workdir), sets))
            print(table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    import river

    args.output.parent.mkdir(parents=True, exist_ok=True)
    head = {"synthetic_rows": args.rows, "river": river.__version__, "loop": loop_version(),
            "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "variant": args.variant, "set": sets}
    args.output.write_text(json.dumps({"benchmark": "replay", **head, "streams": results}, indent=2) + "\n")
    if args.variant:
        merge_variant(args.variants_file, args.variant, head, results)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
