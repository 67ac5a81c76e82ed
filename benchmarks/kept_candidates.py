"""(i) Kept candidates: the artifact disk a stream of retrains leaves, and what a run's log capture costs.

A ctr model (family defaults: 200 trees, depth 4) is trained on a stationary synthetic stream
(retrainer.demo.synthetic, 30 days): one first run on `--initial` rows, then `--runs` retrains, each
after `--batch` new rows arrive. With no drift, and the 6 h promotion cooldown inside a benchmark
that lasts minutes, nearly every candidate is kept: the case where, before archiving ran after every
run and removed the files of versions that never held production, artifacts piled up. Each retrain
is services.retrain.retrain in this process, inside services.run_logs.capture as the training task
runs it (every other run without it, to time the capture in place).

Reported:
  disk      bytes every version's artifact took when written (what was kept on disk before: archiving
            only changed a status) against the bytes left on disk at the end; the archive events'
            bytes_freed must account for the difference exactly, and every version that ever held
            production must still verify and load (a rollback can reach it). Exit 1 otherwise.
  ledger    one entry per production change (the first promotion, and any later one).
  capture   per retrain, with and without capture (medians, paired by neighbouring runs); and the
            capture alone: enter/leave plus 10,000 records through its handler (microseconds each).

    python -m benchmarks.kept_candidates [--runs 40] [--batch 300] [--initial 3000] [--db postgresql|sqlite]
    python -m benchmarks.kept_candidates --quick   # 8 runs: a smoke test (no JSON written)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks import _support as S
from retrainer.config import load_settings
from retrainer.db import session_scope
from retrainer.db.migrate import upgrade
from retrainer.db.records import LedgerEntry, ModelVersion, Observation, SystemEvent
from retrainer.demo import synthetic
from retrainer.services import registry, retrain, run_logs

NAME = "kept_candidates"
MODEL = "ctr"


def insert(url: str, rows: list[synthetic.Row], offset: int, now: datetime) -> None:
    with session_scope(url) as s:
        s.execute(sa.insert(Observation), [
            {"model": MODEL, "event_id": f"obs-{offset + i}", "features": r.features, "label": r.label,
             "event_time": r.event_time, "source": "benchmark", "created_at": now} for i, r in enumerate(rows)])


def on_disk(directory: Path) -> tuple[int, int]:
    files = [p for p in directory.glob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def capture_alone(records: int = 10_000) -> dict[str, float]:
    log = logging.getLogger("retrainer.benchmark")
    enters = []
    for _ in range(200):
        t0 = time.perf_counter()
        with run_logs.capture(["s3cret-password"]):
            pass
        enters.append(time.perf_counter() - t0)
    with run_logs.capture(["s3cret-password"]) as captured:
        t0 = time.perf_counter()
        for i in range(records):
            log.info("step %d of the run: %s", i, "x" * 60)
        per_record = (time.perf_counter() - t0) / records
    return {"enter_leave_us": S.median(enters) * 1e6, "per_record_us": per_record * 1e6,
            "kept_bytes": len(captured.text().encode())}


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    upgrade(url)
    artifact_dir = S.WORKDIR / f"artifacts-{S.RUN_ID}"
    settings = load_settings(var_dir=str(S.WORKDIR / "var"), database_url=url, artifact_dir=str(artifact_dir),
                             models={MODEL: {"family": "ctr", "keep_versions": args.keep}})
    now = datetime.now(UTC).replace(microsecond=0)
    total = args.initial + args.runs * args.batch
    rows = synthetic.generate(total, now - timedelta(days=30), now - timedelta(minutes=1), seed=5)
    insert(url, rows[: args.initial], 0, now)
    secrets = run_logs.secret_values(settings)
    written, seconds, outcomes, log_bytes = 0, {"capture": [], "bare": []}, [], []
    for i in range(args.runs + 1):  # run 0: the first model
        if i:
            start = args.initial + (i - 1) * args.batch
            insert(url, rows[start: start + args.batch], start, now)
        captured = i % 2 == 1
        with session_scope(url) as s:
            t0 = time.perf_counter()
            if captured:
                with run_logs.capture(secrets) as cap:
                    logging.getLogger("retrainer.tasks.training").info("retrain %s: starting", MODEL)
                    result = retrain.retrain(s, settings, MODEL, "manual")
                log_bytes.append(len(cap.text().encode()))
            else:
                result = retrain.retrain(s, settings, MODEL, "manual")
            elapsed = time.perf_counter() - t0
        if result["status"] not in ("retrained", "kept"):
            raise RuntimeError(f"run {i}: {result}")
        if i:
            seconds["capture" if captured else "bare"].append(elapsed)
        outcomes.append(result["status"])
        with session_scope(url) as s:
            written += Path(s.get(ModelVersion, result["version_id"]).artifact_uri).stat().st_size
        S.log(f"run {i}: {result['status']} {result['version_id']} ({elapsed:.2f} s)")
    files, left = on_disk(artifact_dir / MODEL)
    with session_scope(url) as s:
        freed = sum(e.payload.get("bytes_freed", 0) for e in s.scalars(
            sa.select(SystemEvent).where(SystemEvent.kind == "archive")))
        ledger_rows = s.scalar(sa.select(sa.func.count()).select_from(LedgerEntry))
        versions = list(s.scalars(sa.select(ModelVersion).where(ModelVersion.model == MODEL)))
        held = registry.once_production(s, MODEL)
        unreachable = []
        for v in versions:
            if v.version_id in held:
                try:
                    registry.load_estimator(v)
                except Exception as exc:  # noqa: BLE001  reported, and the benchmark fails
                    unreachable.append(f"{v.version_id}: {exc}")
        archived = sum(v.status.value == "archived" for v in versions)
    pairs = list(zip(seconds["capture"], seconds["bare"], strict=False))
    return {
        "runs": args.runs, "batch": args.batch, "initial_rows": args.initial, "keep_versions": args.keep,
        "outcomes": {k: outcomes.count(k) for k in sorted(set(outcomes))},
        "disk": {"versions": len(versions), "archived": archived, "ever_production": len(held),
                 "written_bytes": written, "files_left": files, "bytes_left": left, "bytes_freed_by_events": freed,
                 "accounted": written - left == freed, "production_versions_unreachable": unreachable},
        "ledger_entries": ledger_rows, "production_changes": outcomes.count("retrained"),
        "retrain_seconds": {"with_capture_median": S.median(seconds["capture"]),
                            "without_median": S.median(seconds["bare"]),
                            "paired_ratio_median": S.median([c / b for c, b in pairs]) if pairs else None},
        "log_bytes_per_run_median": S.median(log_bytes) if log_bytes else 0,
        "capture_alone": capture_alone(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--initial", type=int, default=3000)
    parser.add_argument("--keep", type=int, default=10, help="keep_versions")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--quick", action="store_true", help="8 runs, no JSON written")
    args = parser.parse_args()
    if args.quick:
        args.runs = 8
    info = S.machine()
    if args.db == "postgresql":
        with S.postgres_schema("kept") as url:
            data = run(url, args)
        info["database"] = f"PostgreSQL {S.postgres_version()}"
    else:
        data = run(f"sqlite:///{S.WORKDIR / 'kept.db'}", args)
        info["database"] = "SQLite"
    disk, secs, alone = data["disk"], data["retrain_seconds"], data["capture_alone"]
    S.print_table("artifacts after the stream", ("", "value"), [
        ("runs (first model + retrains)", f"{data['runs'] + 1}: {data['outcomes']}"),
        ("versions / archived / ever production", f"{disk['versions']} / {disk['archived']} / {disk['ever_production']}"),
        ("written (kept before this change)", f"{disk['written_bytes'] / 1e6:.2f} MB"),
        ("left on disk", f"{disk['bytes_left'] / 1e6:.2f} MB in {disk['files_left']} files"),
        ("freed, per the archive events", f"{disk['bytes_freed_by_events'] / 1e6:.2f} MB (accounted: {disk['accounted']})"),
        ("ledger entries / production changes", f"{data['ledger_entries']} / {data['production_changes']}"),
    ])
    S.print_table("log capture", ("", "value"), [
        ("retrain median with / without capture", f"{secs['with_capture_median']:.3f} s / {secs['without_median']:.3f} s"),
        ("paired ratio (median)", f"{secs['paired_ratio_median']:.3f}" if secs["paired_ratio_median"] else "-"),
        ("log bytes per run (median)", f"{data['log_bytes_per_run_median']:.0f}"),
        ("capture enter+leave", f"{alone['enter_leave_us']:.1f} µs"),
        ("per log record through it", f"{alone['per_record_us']:.2f} µs"),
    ])
    ok = disk["accounted"] and not disk["production_versions_unreachable"] and \
        data["ledger_entries"] == data["production_changes"]
    if not ok:
        S.banner(f"CHECK FAILED: {disk} ledger {data['ledger_entries']} vs {data['production_changes']}")
    if not args.quick:
        print(f"\nwrote {S.write_result(NAME, {'benchmark': NAME, **info, **data})}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
