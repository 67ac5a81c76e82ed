"""Fuzz: the whole corpus of malformed events (tests/faults/corpus.py) through both paths, on a Redis
and a PostgreSQL of its own (free loopback ports, never the shared servers), with real workers.

  per-event  every entry through tasks.producer.send_event; what it refuses (InvalidEvent) is ALSO
             sent raw, app.send_task('events.ingest_event', args=[payload]), as a producer that
             bypasses send_event would (deep objects included). A real worker (-Q events -c 2) must
             store every valid event once, keep every refusal in system_events (event_rejected)
             with its reason, and stay alive.
  batch      a second corpus (other seed) through tasks.producer.publish_events: every bad event
             comes back with its index, every valid one is stored once.
  retrain    afterwards, one retrain of `ctr` on a training worker must succeed.

Prints what was injected, per category, and what survived; exits 1 on any loss, death or mismatch.

    python -m benchmarks.faults.fuzz_events [--events 10000] [--seed 0] [--drain-timeout 300]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from kombu.exceptions import EncodeError

from benchmarks import _support as S
from retrainer.config import Settings, load_settings
from retrainer.db import get_engine, session_scope
from retrainer.db.migrate import upgrade
from retrainer.db.records import Observation
from retrainer.demo import synthetic
from retrainer.services import events
from retrainer.services.errors import InvalidEvent
from tests.faults.corpus import CATEGORIES, corpus
from tests.faults.servers import PostgresServer, RedisServer, private, unhealthy

MODEL = "ctr"
TROUBLE = ("RecursionError", "Unrecoverable error", "WorkerLostError", "exited with", "Traceback")


def count(url: str, sql: str) -> int:
    with get_engine(url).connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar() or 0)


def seed(url: str, n: int = 500) -> None:
    end = datetime.now(UTC) - timedelta(minutes=5)
    rows = synthetic.generate(n, end - timedelta(days=20), end, seed=3)
    with session_scope(url) as session:
        session.execute(sa.insert(Observation), [
            {"model": MODEL, "event_id": f"seed-{i}", "features": r.features, "label": r.label,
             "event_time": r.event_time, "source": "seed", "created_at": end} for i, r in enumerate(rows)])


def per_event(settings: Settings, app: Any, entries: list[tuple[Any, Any]], drain_timeout: float) -> dict[str, Any]:
    from retrainer.tasks.producer import send_event

    url = settings.database_url
    worker = S.start_worker(settings, S.WORKDIR / "events-worker", queues="events", concurrency=2)
    injected: Counter[str] = Counter()
    refused: Counter[str] = Counter()  # by send_event, on the producer's side
    sent_raw = unsendable = sent = 0
    valid_ids: set[str] = set()
    t0 = time.perf_counter()
    try:
        for payload, expected in entries:
            injected[expected.category] += 1
            try:
                document = events.document(payload)
            except InvalidEvent:
                refused[expected.category] += 1
                try:  # a producer that bypasses send_event
                    app.send_task("events.ingest_event", args=[payload], queue="events")
                    sent_raw += 1
                except EncodeError:  # deeper than kombu's own JSON encoder goes
                    unsendable += 1
                continue
            send_event(payload, via=app)
            sent += 1
            if expected.outcome == "stored":
                valid_ids.add(events.parse(document).event_id or "")
        t_sent = time.perf_counter()
        by_store = sum(e.by == "store" for _, e in entries)
        want_rejected = sent_raw + by_store
        last, last_change = (-1, -1), time.perf_counter()
        while True:
            now_counts = (count(url, "SELECT count(*) FROM observations WHERE source = 'event'"),
                          count(url, "SELECT count(*) FROM system_events WHERE kind = 'event_rejected'"))
            if now_counts != last:
                last, last_change = now_counts, time.perf_counter()
            if (now_counts[0] >= len(valid_ids) and now_counts[1] >= want_rejected) \
                    or time.perf_counter() - last_change > 30 or time.perf_counter() - t_sent > drain_timeout:
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        with get_engine(url).connect() as conn:
            stored_ids = set(conn.execute(sa.text("SELECT event_id FROM observations WHERE source = 'event'")).scalars())
            empty_reasons = conn.execute(sa.text(
                "SELECT count(*) FROM system_events WHERE kind = 'event_rejected' "
                "AND coalesce(payload->>'error', '') = ''")).scalar()
        output = worker.output()
        health = unhealthy(worker)
    finally:
        worker.stop()
    return {
        "injected": dict(injected), "refused_by_send_event": dict(refused), "sent_via_send_event": sent,
        "sent_raw": sent_raw, "unsendable_raw": unsendable, "valid": len(valid_ids), "stored": len(stored_ids),
        "valid_not_stored": len(valid_ids - stored_ids), "stored_not_valid": len(stored_ids - valid_ids),
        "rejected_expected": want_rejected, "rejected_rows": last[1], "rejections_without_reason": int(empty_reasons),
        "seconds": elapsed, "messages_per_s": (sent + sent_raw) / elapsed,
        "worker_alive": not health, "worker_trouble": {w: output.count(w) for w in TROUBLE if w in output},
    }


def batch(settings: Settings, app: Any, entries: list[tuple[Any, Any]]) -> dict[str, Any]:
    from retrainer.tasks.producer import publish_events

    t0 = time.perf_counter()
    out = publish_events((p for p, _ in entries), settings=settings, via=app)
    elapsed = time.perf_counter() - t0
    want = [i for i, (_, e) in enumerate(entries) if e.outcome == "rejected"]
    got = [r["index"] for r in out.rejected]
    return {
        "injected": len(entries), "stored": out.stored, "duplicates": out.duplicates, "rejected": len(got),
        "valid_expected": sum(e.outcome == "stored" for _, e in entries),
        "duplicates_expected": sum(e.outcome == "duplicate" for _, e in entries),
        "rejected_expected": len(want), "rejected_indices_match": got == want,
        "rejections_without_reason": sum(not r["error"] for r in out.rejected),
        "seconds": elapsed, "events_per_s": len(entries) / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    problems: list[str] = []
    with private(RedisServer) as redis_server, private(PostgresServer) as pg:
        pg.execute('CREATE DATABASE "fuzz"')
        url = pg.url("fuzz")
        upgrade(url)
        seed(url)
        settings = load_settings(
            var_dir=str(S.WORKDIR / "var"), database_url=url, broker_url=redis_server.url(),
            result_backend=redis_server.url(1), artifact_dir=str(S.WORKDIR / "artifacts"), redis_key_prefix="fuzz",
            models={MODEL: {"family": "ctr", "params": {"n_estimators": 60, "max_depth": 3}, "debounce_seconds": 3600,
                            "schedules": {"check": None, "retrain": None, "monitor": None}}},
        )
        from retrainer.tasks.app import make_app
        from retrainer.tasks.enqueue import send_retrain

        app = make_app(settings)
        S.log(f"fuzz: {args.events:,} events (seed {args.seed}) per path; Redis :{redis_server.port}, "
              f"PostgreSQL :{pg.port}, both private")
        entries = corpus(args.events, seed=args.seed)
        S.log("per-event path: send_event, and raw send_task for what it refuses; worker -Q events -c 2")
        one = per_event(settings, app, entries, args.drain_timeout)
        S.log(f"per-event path done in {one['seconds']:.1f}s; batch path: publish_events")
        many = batch(settings, app, corpus(args.events, seed=args.seed + 1))
        trainer = S.start_worker(settings, S.WORKDIR / "training-worker", queues="training,notifications", concurrency=1)
        try:
            retrained = send_retrain(MODEL, settings=settings, via=app).get(timeout=300)
        finally:
            trainer.stop()
        app.close()
        gc.collect()  # results still waiting for their __del__ let go of the result backend while Redis runs

    S.print_table(
        "per-event path: injected by category, refused on the producer's side by send_event (then sent raw)",
        ["category", "injected", "refused by send_event"],
        [[c, one["injected"].get(c, 0), one["refused_by_send_event"].get(c, 0)] for c in CATEGORIES],
    )
    S.print_table("what survived", ["", "per-event", "batch"], [
        ["injected", args.events, many["injected"]],
        ["valid: expected / stored", f"{one['valid']} / {one['stored']}", f"{many['valid_expected']} / {many['stored']}"],
        ["duplicates (stored once)", "-", f"{many['duplicates_expected']} / {many['duplicates']}"],
        ["rejected: expected / kept with a reason", f"{one['rejected_expected']} / {one['rejected_rows']}",
         f"{many['rejected_expected']} / {many['rejected']}"],
        ["raw sends kombu could not encode", one["unsendable_raw"], "-"],
        ["seconds", f"{one['seconds']:.1f}", f"{many['seconds']:.1f}"],
        ["worker alive, trouble in its log", f"{one['worker_alive']}, {one['worker_trouble'] or 'none'}", "-"],
    ])
    print(f"\nretrain afterwards: {retrained['status']} ({retrained.get('samples', '?')} training rows)")

    if not one["worker_alive"] or one["worker_trouble"]:
        problems.append(f"events worker: alive={one['worker_alive']}, trouble={one['worker_trouble']}")
    if one["valid_not_stored"] or one["stored_not_valid"]:
        problems.append(f"per-event: {one['valid_not_stored']} valid events lost, {one['stored_not_valid']} stored wrongly")
    if one["rejected_rows"] != one["rejected_expected"] or one["rejections_without_reason"]:
        problems.append(f"per-event: {one['rejected_rows']} rejections kept of {one['rejected_expected']} "
                        f"({one['rejections_without_reason']} without a reason)")
    if (many["stored"], many["duplicates"]) != (many["valid_expected"], many["duplicates_expected"]):
        problems.append(f"batch: stored/duplicates {many['stored']}/{many['duplicates']}, expected "
                        f"{many['valid_expected']}/{many['duplicates_expected']}")
    if not many["rejected_indices_match"] or many["rejections_without_reason"]:
        problems.append("batch: the rejected indices or reasons are not the expected ones")
    if retrained["status"] not in ("retrained", "kept"):
        problems.append(f"retrain afterwards: {retrained}")
    for problem in problems:
        S.banner(problem)
    if not problems:
        print("OK: 0 worker deaths, 0 silent losses, every rejection with a reason, the retrain afterwards succeeded")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
