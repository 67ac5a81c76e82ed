"""(b) Event storm: 100,000 purchase events for 10 models, Redis broker + PostgreSQL database.

Three ways in, measured in one run (the first and third interleaved, repeated, so their ratio is
side by side):

  bare     the bare per-event loop: app.send_task('events.ingest_event', args=[payload]) with no
           worker, TIME-BOXED (--bare-seconds per repeat, default 8 s): msgs/s put on the broker.
           Every message is checked to be in the Redis `events` list, then the list is purged.
  worker   the per-event task path end to end with a REAL worker subprocess
           (`celery -A retrainer.tasks worker -Q events -c 2`): retrainer.tasks.producer.send_event for --worker-seconds
           (TIME-BOXED, default 10 s of sending), then wait until every sent event is a row in
           observations. events/s = stored / (first send -> last row stored). Nothing extrapolated.
           The training queue has no consumer on purpose, so the retrain messages stay countable.
  batch    tasks.producer.publish_events(all 100,000, chunk=5000): events/s stored (the call
           returns after the last chunk commits and its retrains are enqueued).

For worker and batch: retrains enqueued = retrain_requests rows = messages in the Redis `training`
list (and publish_events' own count); must be exactly 10, one per model (debounce 3600 s covers the
run). Lost = sent - rows stored; must be 0. Tables and queues are emptied between runs.

    python -m benchmarks.event_storm [--events 100000] [--repeats 3] [--bare-seconds 8] [--worker-seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from benchmarks import _support as S
from retrainer.config import Settings, load_settings
from retrainer.db import get_engine
from retrainer.db.migrate import upgrade
from retrainer.demo import synthetic

NAME = "event_storm"
MODELS = [f"storm{i}" for i in range(10)]
CHUNK = 5000
DEBOUNCE = 3600.0
TARGET_RATIO = 20.0


def make_events(n: int) -> list[dict[str, Any]]:
    """n purchase events, models interleaved (every chunk touches all 10), real synthetic rows."""
    per_model = -(-n // len(MODELS))
    end = datetime.now(UTC).replace(microsecond=0)
    columns = [
        synthetic.as_purchase_events(synthetic.generate(per_model, end - timedelta(days=30), end, seed=100 + i), m, m)
        for i, m in enumerate(MODELS)
    ]
    return [columns[j % len(MODELS)][j // len(MODELS)] for j in range(n)]


def relabel(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """Fresh event ids per run (a re-used id would be a duplicate, stored once)."""
    return [{**e, "event_id": f"{tag}-{k}"} for k, e in enumerate(events)]


class Storm:
    def __init__(self, url: str, settings: Settings):
        self.url, self.settings = url, settings
        self.prefix = settings.redis_key_prefix
        self.redis = S.redis_client()
        self.engine = get_engine(url)

    def queue_key(self, queue: str) -> str:
        return f"{self.prefix}:{queue}"

    def queue_length(self, queue: str) -> int:
        return int(self.redis.llen(self.queue_key(queue)))

    def reset(self) -> None:
        """Empty the tables this benchmark writes and the two queues."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE observations, retrain_requests, training_runs, system_events RESTART IDENTITY CASCADE"))
        self.redis.delete(self.queue_key("events"), self.queue_key("training"))

    def count(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar() or 0)

    def stored(self) -> int:
        return self.count("SELECT count(*) FROM observations")

    def retrain_counts(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            per_model = dict(conn.execute(sa.text("SELECT model, count(*) FROM retrain_requests GROUP BY model")).all())
            joined = int(conn.execute(sa.text("SELECT coalesce(sum(event_count), 0) FROM retrain_requests")).scalar())
        return {"requests": sum(per_model.values()), "per_model_max": max(per_model.values(), default=0),
                "models": len(per_model), "training_messages": self.queue_length("training"), "events_joined": joined}


def bare_loop(storm: Storm, app: Any, events: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    storm.reset()
    sent = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    for payload in events:
        app.send_task("events.ingest_event", args=[payload])
        sent += 1
        if sent % 50 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - t0
    on_broker = storm.queue_length("events")
    storm.reset()
    return {"sent": sent, "seconds": elapsed, "msgs_per_s": sent / elapsed, "on_broker": on_broker}


def batch_path(storm: Storm, app: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    from retrainer.tasks.producer import publish_events

    storm.reset()
    t0 = time.perf_counter()
    out = publish_events(events, settings=storm.settings, chunk=CHUNK, via=app)
    elapsed = time.perf_counter() - t0
    stored = storm.stored()
    result = {"sent": len(events), "stored": stored, "lost": len(events) - stored, "seconds": elapsed,
              "events_per_s": stored / elapsed, "reported": out.as_dict() | {"rejected": len(out.rejected)},
              "retrains": storm.retrain_counts() | {"publish_events_count": out.retrains_enqueued}}
    storm.reset()
    return result


def worker_path(storm: Storm, app: Any, events: list[dict[str, Any]], send_seconds: float,
                drain_timeout: float) -> dict[str, Any]:
    from retrainer.tasks.producer import send_event

    storm.reset()
    worker = S.start_worker(storm.settings, S.WORKDIR / "worker", queues="events", concurrency=2)
    try:
        sent = 0
        t0 = time.perf_counter()
        deadline = t0 + send_seconds
        for payload in events:
            send_event(payload, via=app)
            sent += 1
            if sent % 50 == 0 and time.perf_counter() >= deadline:
                break
        t_sent = time.perf_counter()
        stored, last_change, last = 0, t_sent, -1
        while True:
            stored = storm.stored()
            now = time.perf_counter()
            if stored != last:
                last, last_change = stored, now
            if stored >= sent or now - last_change > 30 or now - t_sent > drain_timeout:
                break
            time.sleep(0.05)
        t_done = time.perf_counter()
        rejected = storm.count("SELECT count(*) FROM system_events WHERE kind = 'event_rejected'")
        retrains = storm.retrain_counts()
        left_on_broker = storm.queue_length("events")
        log_tail = worker.output()
    finally:
        worker.stop()
    errors = [ln for ln in log_tail.splitlines() if "ERROR" in ln or "Traceback" in ln]
    result = {"sent": sent, "stored": stored, "lost": sent - stored, "send_seconds": t_sent - t0,
              "send_msgs_per_s": sent / (t_sent - t0), "seconds_end_to_end": t_done - t0,
              "events_per_s": stored / (t_done - t0), "rejected": rejected, "left_on_broker": left_on_broker,
              "worker": "celery -A retrainer.tasks worker -Q events -c 2 (prefork, -l info)", "worker_errors": len(errors),
              "retrains": retrains}
    if errors:
        result["first_worker_error"] = errors[0][:300]
    storm.reset()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bare-seconds", type=float, default=8.0)
    parser.add_argument("--worker-seconds", type=float, default=10.0)
    parser.add_argument("--drain-timeout", type=float, default=240.0)
    parser.add_argument("--skip-worker", action="store_true")
    args = parser.parse_args(argv)
    info = S.machine()
    prefix = f"bench-{S.RUN_ID}"
    S.log(f"{NAME}: {args.events:,} events for {len(MODELS)} models, {args.repeats} repeats; "
          f"Redis {S.REDIS_SERVER} prefix {prefix}:")
    events = make_events(args.events)
    problems: list[str] = []
    try:
        with S.postgres_schema("storm") as url:
            upgrade(url)
            model_cfg = {"family": "ctr", "debounce_seconds": DEBOUNCE,
                         "schedules": {"check": None, "retrain": None, "monitor": None}}
            settings = load_settings(
                var_dir=str(S.WORKDIR / "var"), database_url=url, broker_url=S.REDIS_SERVER,
                result_backend=S.REDIS_SERVER, redis_key_prefix=prefix, models={m: model_cfg for m in MODELS},
            )
            from retrainer.tasks.app import make_app

            app = make_app(settings)
            storm = Storm(url, settings)
            for payload in relabel(events[:200], "warm"):  # connect, declare, warm the send path
                app.send_task("events.ingest_event", args=[payload])
            storm.reset()

            bare: list[dict[str, Any]] = []
            batch: list[dict[str, Any]] = []
            for r in range(args.repeats):
                bare.append(bare_loop(storm, app, relabel(events, f"bare{r}"), args.bare_seconds))
                S.log(f"bare loop  #{r}: {bare[-1]['sent']:,} msgs in {bare[-1]['seconds']:.1f}s = "
                      f"{bare[-1]['msgs_per_s']:,.0f} msgs/s (on broker: {bare[-1]['on_broker']:,})")
                batch.append(batch_path(storm, app, relabel(events, f"batch{r}")))
                b = batch[-1]
                S.log(f"batch path #{r}: {b['stored']:,} stored in {b['seconds']:.2f}s = {b['events_per_s']:,.0f} events/s, "
                      f"retrains {b['retrains']['requests']}, lost {b['lost']}")
            worker = None
            if not args.skip_worker:
                S.log(f"per-event path with a real worker: sending for {args.worker_seconds:.0f}s, then draining")
                worker = worker_path(storm, app, relabel(events, "worker"), args.worker_seconds, args.drain_timeout)
                S.log(f"worker path: {worker['stored']:,}/{worker['sent']:,} stored in {worker['seconds_end_to_end']:.1f}s "
                      f"= {worker['events_per_s']:,.0f} events/s, retrains {worker['retrains']['requests']}")
            app.close()
    finally:
        removed = S.redis_cleanup(prefix)
    S.log(f"cleanup: schema dropped, {removed} Redis keys of this run deleted")

    bare_med = S.median([b["msgs_per_s"] for b in bare])
    batch_med = S.median([b["events_per_s"] for b in batch])
    ratio = batch_med / bare_med
    paired = [b["events_per_s"] / a["msgs_per_s"] for a, b in zip(bare, batch, strict=True)]
    for b in bare:
        if b["on_broker"] != b["sent"]:
            problems.append(f"bare loop: sent {b['sent']} but {b['on_broker']} on the broker")
    for b in batch:
        rt = b["retrains"]
        if b["lost"] or b["reported"]["rejected"] or b["reported"]["duplicates"]:
            problems.append(f"batch path lost/rejected events: {b}")
        if not (rt["requests"] == rt["training_messages"] == rt["publish_events_count"] == len(MODELS) and rt["per_model_max"] == 1):
            problems.append(f"batch path retrains not one per model: {rt}")
    if worker is not None:
        rt = worker["retrains"]
        if worker["lost"] or worker["rejected"]:
            problems.append(f"worker path lost/rejected events: lost {worker['lost']}, rejected {worker['rejected']}")
        if not (rt["requests"] == rt["training_messages"] == len(MODELS) and rt["per_model_max"] == 1):
            problems.append(f"worker path retrains not one per model: {rt}")

    rows = [
        ["bare send_task loop (no worker, time-boxed)", f"{bare_med:,.0f} msgs/s", S.spread([b['msgs_per_s'] for b in bare], "{:,.0f}"),
         f"{S.median([b['sent'] for b in bare]):,.0f} in ~{args.bare_seconds:.0f}s", "-", "-"],
    ]
    if worker is not None:
        rows.append(["per-event task path, real worker (time-boxed)", f"{worker['events_per_s']:,.0f} ev/s", "1 run",
                     f"{worker['stored']:,}/{worker['sent']:,} in {worker['seconds_end_to_end']:.1f}s",
                     worker["retrains"]["requests"], worker["lost"]])
    rows.append(["batch publish_events (chunk 5000)", f"{batch_med:,.0f} ev/s", S.spread([b['events_per_s'] for b in batch], "{:,.0f}"),
                 f"{batch[0]['sent']:,} in {S.median([b['seconds'] for b in batch]):.2f}s",
                 "/".join(str(b["retrains"]["requests"]) for b in batch), "/".join(str(b["lost"]) for b in batch)])
    S.print_table(f"event storm: {len(MODELS)} models, Redis broker + PostgreSQL (median of {args.repeats})",
                  ["path", "median rate", "min–max", "volume", "retrains", "lost"], rows)
    print(f"batch events/s ÷ bare loop msgs/s = {ratio:.1f}x (of medians; paired runs {S.spread(paired, '{:.1f}')}); "
          f"target ≥ {TARGET_RATIO:.0f}x: {'MET' if ratio >= TARGET_RATIO else 'NOT MET'}")
    if worker is not None:
        print(f"batch ÷ per-event worker path = {batch_med / worker['events_per_s']:.0f}x")

    info["loadavg_at_end"] = S.loadavg()
    path = S.write_result(NAME, {
        "benchmark": NAME,
        "database": "PostgreSQL " + S.postgres_version(), "broker": "Redis (db 14)",
        "events": args.events, "models": len(MODELS), "chunk": CHUNK, "debounce_seconds": DEBOUNCE,
        "repeats": args.repeats,
        "bare_loop": {"time_box_seconds": args.bare_seconds, "median_msgs_per_s": bare_med, "runs": bare},
        "batch_path": {"median_events_per_s": batch_med, "runs": batch},
        "worker_path": worker,
        "ratio_batch_over_bare": {"of_medians": ratio, "paired_runs": paired, "target": TARGET_RATIO,
                                  "met": ratio >= TARGET_RATIO},
        "problems": problems,
        "machine": info,
    })
    print(f"results: {path}")
    if problems:
        for p in problems:
            S.banner(p)
        return 1
    print("OK: no event lost, exactly one retrain per model on every path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
