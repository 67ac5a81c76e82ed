"""(b) Event storm: purchase events for 10 models into `observations`, Redis broker + PostgreSQL, every
way in side by side in one run (each path once per repeat, interleaved; tables and queues emptied in between).

  lean       the BASELINE, the leanest per-message publish a Celery user can write: one connection and
             producer kept open, result ignored, no task-sent event, kombu's stock Redis transport:
             kombu `Producer.publish` of the task message Celery builds (`app.amqp.create_task_message`,
             the event dict as its argument, as `ingest_event.delay(event)` would send it). Publish rate,
             and end to end (first publish -> last row stored) with retrainer's events worker draining.
             `app.send_task(..., producer=P)` on the same lean app is timed too, alone (no consumer).
  per-event  retrainer's per-event path: `send_event` in a loop (validated, its Redis receipt written in
             the message's own round trip, published without a sent event), one message per event, with
             a real events worker (`celery -A retrainer.tasks worker -Q events -c 2`: a window of 1,000
             messages, batches of up to 500 per transaction). End to end, first send -> last row stored.
  pipelined  the same messages and receipts sent by `send_events` (chunks of 500, one round trip each: a
             producer that out-sends the worker, as a fleet of producers would), the same worker. End
             to end, first send -> last row stored: the per-event path's drain rate under a live stream.
  drain      the same worker draining a backlog: --messages sent with `send_event` while the worker's
             consumer is cancelled (remote control; that also times send_event alone), then added back:
             rows stored after the first row / (first row -> last row stored). What the worker sustains.
  batch      `publish_events(all --events, chunk=5000)`: call -> return (committed, retrains enqueued).
  copy       the CEILING: PostgreSQL COPY of the same rows into observations (psycopg `cursor.copy`, the
             features as JSON text), no validation, no coalescing: first row -> commit.

Checks (exit 1 on any): lost = sent - rows stored = 0 on every path; no message left on the broker, no
receipt left (per-event, drain), no event rejected; retrains enqueued = retrain_requests rows = messages
in the training queue = 10, one per model (debounce 3600 s covers the run; no consumer on training).
JSON keys `bare_loop` (the lean baseline's publish rate) and `worker_path` (per-event end to end) keep
the names benchmarks/run_all.py reads.

    python -m benchmarks.event_storm [--events 100000] [--messages 20000] [--repeats 3]   (~4 min)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
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
TARGET_PER_EVENT = 2000.0  # events/s, one Celery message per event
TASK = "events.ingest_event"


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
        self.prefix = f"{settings.redis_key_prefix}:"
        self.redis = S.redis_client()
        self.engine = get_engine(url)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def reset(self) -> None:
        """Empty the tables this benchmark writes, the two queues, the receipts and kombu's unacked records."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE observations, retrain_requests, training_runs, system_events RESTART IDENTITY CASCADE"))
        self.redis.delete(*(self.key(k) for k in ("inbox:events", "unacked", "unacked_index")),
                          *(self.key(q + (f"\x06\x16{p}" if p else "")) for q in ("events", "training") for p in (0, 3, 6, 9)))

    def count(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar() or 0)

    def stored(self) -> int:
        return self.count("SELECT count(*) FROM observations")

    def wait_stored(self, expected: int, timeout: float) -> tuple[int, float]:
        """Poll until `expected` rows (or no progress for 30 s); the row count and when it was reached."""
        last, last_change, started = -1, time.perf_counter(), time.perf_counter()
        while True:
            stored, now = self.stored(), time.perf_counter()
            if stored != last:
                last, last_change = stored, now
            if stored >= expected or now - last_change > 30 or now - started > timeout:
                return stored, now
            time.sleep(0.01)

    def checks(self, sent: int, stored: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            per_model = dict(conn.execute(sa.text("SELECT model, count(*) FROM retrain_requests GROUP BY model")).all())
            joined = int(conn.execute(sa.text("SELECT coalesce(sum(event_count), 0) FROM retrain_requests")).scalar())
        deadline = time.monotonic() + 5  # a batch clears its receipts right after its commit
        while self.redis.hlen(self.key("inbox:events")) and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"sent": sent, "stored": stored, "lost": sent - stored,
                "rejected": self.count("SELECT count(*) FROM system_events WHERE kind = 'event_rejected'"),
                "left_on_broker": self.queued("events"),
                "receipts_left": int(self.redis.hlen(self.key("inbox:events"))),
                "retrains": {"requests": sum(per_model.values()), "per_model_max": max(per_model.values(), default=0),
                             "training_messages": self.queued("training"), "events_joined": joined}}

    def queued(self, queue: str) -> int:
        """Messages waiting in a queue, every priority level (kombu keeps one Redis list per level)."""
        return sum(int(self.redis.llen(self.key(queue + (f"\x06\x16{p}" if p else "")))) for p in (0, 3, 6, 9))


class Worker:
    """One real events worker for the whole run; its consumer is cancelled and added back by remote control."""

    def __init__(self, storm: Storm, app: Any):
        self.storm, self.app = storm, app
        self.process = S.start_worker(storm.settings, S.WORKDIR / "worker", queues="events", concurrency=2)
        stats = app.control.inspect(timeout=5).stats() or {}
        self.name, info = next(iter(stats.items()))
        self.prefetch = info["prefetch_count"]

    def consume(self, on: bool) -> None:
        control = self.app.control.add_consumer if on else self.app.control.cancel_consumer
        replies = control("events", reply=True, destination=[self.name], timeout=5)
        if not replies:
            raise RuntimeError(f"the worker did not answer {'add' if on else 'cancel'}_consumer")

    def batches(self) -> int:
        return self.process.output().count("events batch:")

    def errors(self) -> list[str]:
        return [ln for ln in self.process.output().splitlines() if "ERROR" in ln or "Traceback" in ln]


def timed_loop(items: list[Any], send: Callable[[Any], Any]) -> float:
    t0 = time.perf_counter()
    for item in items:
        send(item)
    return time.perf_counter() - t0


def lean_app(settings: Settings) -> Any:
    """What a Celery user would configure for the leanest publish: JSON, no sent events, results ignored,
    kombu's own transport, the same broker and key prefix."""
    from celery import Celery

    lean = Celery("lean", broker=settings.broker_url, set_as_current=False)
    lean.conf.update(broker_transport_options={"global_keyprefix": f"{settings.redis_key_prefix}:"},
                     task_serializer="json", accept_content=["json"], task_send_sent_event=False,
                     task_ignore_result=True)
    return lean


def lean_publisher(lean: Any, producer: Any) -> Callable[[dict[str, Any]], None]:
    from kombu.utils.uuid import uuid

    def publish(event: dict[str, Any]) -> None:
        headers, properties, body, _ = lean.amqp.create_task_message(uuid(), TASK, [event], {}, ignore_result=True)
        producer.publish(body, exchange="", routing_key="events", serializer="json", headers=headers, **properties)

    return publish


def lean_path(storm: Storm, worker: Worker, publish: Callable[[dict[str, Any]], None],
              events: list[dict[str, Any]]) -> dict[str, Any]:
    storm.reset()
    before = worker.batches()
    t0 = time.perf_counter()
    seconds = timed_loop(events, publish)
    stored, t_done = storm.wait_stored(len(events), timeout=300)
    time.sleep(0.3)  # the last batch's log line
    return storm.checks(len(events), stored) | {
        "publish_seconds": seconds, "publish_msgs_per_s": len(events) / seconds,
        "seconds_end_to_end": t_done - t0, "events_per_s": stored / (t_done - t0), "batches": worker.batches() - before}


def per_event_path(storm: Storm, worker: Worker, app: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    from retrainer.tasks.producer import send_event

    storm.reset()
    before = worker.batches()
    t0 = time.perf_counter()
    seconds = timed_loop(events, lambda e: send_event(e, via=app))
    stored, t_done = storm.wait_stored(len(events), timeout=300)
    time.sleep(0.3)  # the last batch's log line
    return storm.checks(len(events), stored) | {
        "send_seconds": seconds, "send_msgs_per_s": len(events) / seconds, "seconds_end_to_end": t_done - t0,
        "events_per_s": stored / (t_done - t0), "batches": worker.batches() - before}


def pipelined_path(storm: Storm, worker: Worker, app: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    from retrainer.tasks.producer import send_events

    storm.reset()
    before = worker.batches()
    t0 = time.perf_counter()
    seconds = timed_loop([events[i:i + 500] for i in range(0, len(events), 500)], lambda c: send_events(c, via=app))
    stored, t_done = storm.wait_stored(len(events), timeout=300)
    time.sleep(0.3)
    return storm.checks(len(events), stored) | {
        "send_seconds": seconds, "send_msgs_per_s": len(events) / seconds, "seconds_end_to_end": t_done - t0,
        "events_per_s": stored / (t_done - t0), "batches": worker.batches() - before}


def drain_path(storm: Storm, worker: Worker, app: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    from retrainer.tasks.producer import send_event

    storm.reset()
    worker.consume(False)
    try:
        seconds = timed_loop(events, lambda e: send_event(e, via=app))
        queued = storm.queued("events")
    finally:
        before = worker.batches()
        worker.consume(True)
    first, t_first = storm.wait_stored(1, timeout=60)  # the first batch committed: the drain is under way
    stored, t_done = storm.wait_stored(len(events), timeout=300)
    time.sleep(0.3)
    return storm.checks(len(events), stored) | {
        "send_seconds": seconds, "send_msgs_per_s": len(events) / seconds, "queued": queued,
        "stored_at_first_row": first, "seconds": t_done - t_first, "events_per_s": (stored - first) / (t_done - t_first),
        "batches": worker.batches() - before}


def send_task_alone(storm: Storm, worker: Worker, lean: Any, producer: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    """`app.send_task(name, args, producer=P)` on the lean app, with no consumer: publish rate only."""
    storm.reset()
    worker.consume(False)
    try:
        seconds = timed_loop(events, lambda e: lean.send_task(TASK, args=[e], queue="events", producer=producer,
                                                              ignore_result=True))
        queued = storm.queued("events")
    finally:
        storm.reset()
        worker.consume(True)
    return {"sent": len(events), "queued": queued, "seconds": seconds, "msgs_per_s": len(events) / seconds}


def batch_path(storm: Storm, app: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    from retrainer.tasks.producer import publish_events

    storm.reset()
    t0 = time.perf_counter()
    out = publish_events(events, settings=storm.settings, chunk=CHUNK, via=app)
    seconds = time.perf_counter() - t0
    stored = storm.stored()
    result = storm.checks(len(events), stored) | {"seconds": seconds, "events_per_s": stored / seconds,
                                                  "reported": out.as_dict() | {"rejected": len(out.rejected)}}
    result["retrains"]["publish_events_count"] = out.retrains_enqueued
    return result


def copy_path(storm: Storm, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The same rows by COPY: what PostgreSQL itself takes, with nothing checked or coalesced."""
    storm.reset()
    raw = storm.engine.raw_connection()
    try:
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        with raw.driver_connection.cursor() as cur, cur.copy(
            "COPY observations (model, event_id, features, label, event_time, source, created_at) FROM STDIN"
        ) as copy:
            for e in events:
                copy.write_row((e["model"], e["event_id"], json.dumps(e["features"]), e["value"], e["occurred_at"],
                                "copy", now))
        raw.driver_connection.commit()
        seconds = time.perf_counter() - t0
    finally:
        raw.close()
    stored = storm.stored()
    return {"sent": len(events), "stored": stored, "lost": len(events) - stored, "seconds": seconds,
            "rows_per_s": stored / seconds}


def problems_of(path: str, runs: list[dict[str, Any]], expect_retrains: bool = True) -> list[str]:
    out = []
    for r in runs:
        if r["lost"] or r.get("rejected") or r.get("left_on_broker") or r.get("receipts_left"):
            out.append(f"{path}: lost {r['lost']}, rejected {r.get('rejected')}, left on broker "
                       f"{r.get('left_on_broker')}, receipts left {r.get('receipts_left')}")
        rt = r.get("retrains")
        if expect_retrains and rt and not (rt["requests"] == rt["training_messages"] == len(MODELS)
                                           and rt["per_model_max"] == 1
                                           and rt.get("publish_events_count", len(MODELS)) == len(MODELS)):
            out.append(f"{path}: retrains not one per model: {rt}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events for the batch and COPY paths")
    parser.add_argument("--messages", type=int, default=20_000, help="messages for the lean, per-event, pipelined and drain paths")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    info = S.machine()
    prefix = f"bench-{S.RUN_ID}"
    S.log(f"{NAME}: {args.messages:,} per-event messages and {args.events:,} batch/COPY rows for {len(MODELS)} "
          f"models, {args.repeats} repeats; Redis {S.REDIS_SERVER} prefix {prefix}:")
    events = make_events(max(args.events, args.messages))
    runs: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("send_task", "lean", "per_event", "pipelined", "drain", "batch", "copy")}
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
            from retrainer.tasks.producer import send_event

            app = make_app(settings)
            storm = Storm(url, settings)
            worker = Worker(storm, app)
            lean = lean_app(settings)
            S.log(f"events worker {worker.name}: prefetch window {worker.prefetch}")
            try:
                with lean.producer_or_acquire() as producer:
                    publish = lean_publisher(lean, producer)
                    for k, payload in enumerate(relabel(events[:300], "warm")):  # connect, declare, warm both paths
                        (publish if k % 2 else lambda e: send_event(e, via=app))(payload)
                    storm.wait_stored(300, timeout=60)
                    for r in range(args.repeats):
                        msgs = events[:args.messages]
                        runs["send_task"].append(send_task_alone(storm, worker, lean, producer, relabel(msgs, f"st{r}")))
                        runs["lean"].append(lean_path(storm, worker, publish, relabel(msgs, f"lean{r}")))
                        runs["per_event"].append(per_event_path(storm, worker, app, relabel(msgs, f"pe{r}")))
                        runs["pipelined"].append(pipelined_path(storm, worker, app, relabel(msgs, f"pp{r}")))
                        runs["drain"].append(drain_path(storm, worker, app, relabel(msgs, f"drain{r}")))
                        runs["batch"].append(batch_path(storm, app, relabel(events[:args.events], f"batch{r}")))
                        runs["copy"].append(copy_path(storm, relabel(events[:args.events], f"copy{r}")))
                        st, le, pe, pp, dr, ba, co = (runs[k][-1] for k in runs)
                        S.log(f"#{r}: send_task alone {st['msgs_per_s']:,.0f}/s | lean publish {le['publish_msgs_per_s']:,.0f}/s, "
                              f"e2e {le['events_per_s']:,.0f}/s | send_event e2e {pe['events_per_s']:,.0f}/s "
                              f"(sent {pe['send_msgs_per_s']:,.0f}/s, {pe['batches']} batches) | send_events e2e "
                              f"{pp['events_per_s']:,.0f}/s (sent {pp['send_msgs_per_s']:,.0f}/s, {pp['batches']} batches) | drain "
                              f"{dr['events_per_s']:,.0f}/s ({dr['batches']} batches) | batch {ba['events_per_s']:,.0f}/s "
                              f"| COPY {co['rows_per_s']:,.0f}/s | lost {le['lost']}/{pe['lost']}/{pp['lost']}/{dr['lost']}/"
                              f"{ba['lost']}/{co['lost']}")
                    storm.reset()
            finally:
                errors = worker.errors()
                worker.process.stop()
            app.close()
    finally:
        removed = S.redis_cleanup(prefix)
    S.log(f"cleanup: schema dropped, {removed} Redis keys of this run deleted")

    def med(path: str, key: str) -> float:
        return S.median([r[key] for r in runs[path]])

    def paired(a: str, ka: str, b: str, kb: str) -> list[float]:
        return [x[ka] / y[kb] for x, y in zip(runs[a], runs[b], strict=True)]

    lean_pub, lean_e2e = med("lean", "publish_msgs_per_s"), med("lean", "events_per_s")
    per_event, drain = med("per_event", "events_per_s"), med("drain", "events_per_s")
    pipelined = med("pipelined", "events_per_s")
    batch, copy = med("batch", "events_per_s"), med("copy", "rows_per_s")
    problems = (problems_of("lean", runs["lean"]) + problems_of("per-event", runs["per_event"])
                + problems_of("pipelined", runs["pipelined"]) + problems_of("drain", runs["drain"]) + problems_of("batch", runs["batch"])
                + problems_of("copy", runs["copy"], expect_retrains=False))
    problems += [f"send_task alone: {r['sent']} sent, {r['queued']} on the broker" for r in runs["send_task"]
                 if r["queued"] != r["sent"]]
    if errors:
        problems.append(f"the worker logged {len(errors)} errors, the first: {errors[0][:300]}")

    def rate_row(label: str, path: str, key: str, unit: str, volume: str, lost: bool = True) -> list[Any]:
        values = [r[key] for r in runs[path]]
        return [label, f"{S.median(values):,.0f} {unit}", S.spread(values, "{:,.0f}"), volume,
                "/".join(str(r["lost"]) for r in runs[path]) if lost else "-"]

    m, n = f"{args.messages:,}", f"{args.events:,}"
    rows = [
        rate_row("lean Celery publish, app.send_task(producer=P), no consumer", "send_task", "msgs_per_s", "msgs/s", m, False),
        rate_row("lean Celery publish, Producer.publish (BASELINE), publish rate", "lean", "publish_msgs_per_s", "msgs/s", m, False),
        rate_row("  the same, drained by retrainer's events worker, end to end", "lean", "events_per_s", "ev/s", m),
        rate_row("send_event alone (receipt + lean publish), no consumer", "drain", "send_msgs_per_s", "msgs/s", m, False),
        rate_row("per-event path: send_event loop + events worker, end to end", "per_event", "events_per_s", "ev/s", m),
        rate_row("send_events (pipelined, 500 a round trip) alone, worker consuming", "pipelined", "send_msgs_per_s",
                 "msgs/s", m, False),
        rate_row("per-event path: send_events + events worker, end to end", "pipelined", "events_per_s", "ev/s", m),
        rate_row("per-event path: the worker draining a backlog", "drain", "events_per_s", "ev/s", m),
        rate_row("batch publish_events (chunk 5,000)", "batch", "events_per_s", "ev/s", n),
        rate_row("CEILING: PostgreSQL COPY of the same rows", "copy", "rows_per_s", "rows/s", n),
    ]
    S.print_table(f"event storm: {len(MODELS)} models, Redis + PostgreSQL, median of {args.repeats} "
                  f"(worker window {worker.prefetch}, batches ≤ 500)",
                  ["path", "median", "min–max", "volume", "lost"], rows)
    ratios = {
        "per_event_e2e_over_lean_e2e": {"of_medians": per_event / lean_e2e, "paired": paired("per_event", "events_per_s", "lean", "events_per_s")},
        "per_event_e2e_over_lean_publish": {"of_medians": per_event / lean_pub, "paired": paired("per_event", "events_per_s", "lean", "publish_msgs_per_s")},
        "pipelined_e2e_over_lean_e2e": {"of_medians": pipelined / lean_e2e, "paired": paired("pipelined", "events_per_s", "lean", "events_per_s")},
        "pipelined_e2e_over_lean_publish": {"of_medians": pipelined / lean_pub, "paired": paired("pipelined", "events_per_s", "lean", "publish_msgs_per_s")},
        "drain_over_lean_publish": {"of_medians": drain / lean_pub, "paired": paired("drain", "events_per_s", "lean", "publish_msgs_per_s")},
        "batch_over_lean_publish": {"of_medians": batch / lean_pub, "paired": paired("batch", "events_per_s", "lean", "publish_msgs_per_s")},
        "copy_over_batch": {"of_medians": copy / batch, "paired": paired("copy", "rows_per_s", "batch", "events_per_s")},
        "copy_over_drain": {"of_medians": copy / drain, "paired": paired("copy", "rows_per_s", "drain", "events_per_s")},
    }
    for name, ratio in ratios.items():
        print(f"{name.replace('_', ' ')}: {ratio['of_medians']:.2f}x (paired {S.spread(ratio['paired'], '{:.2f}')})")
    def met(value: float) -> str:
        return f"{value:,.0f} ({'MET' if value >= TARGET_PER_EVENT else 'NOT MET'})"

    print(f"per-event path, target ≥ {TARGET_PER_EVENT:,.0f} ev/s: end to end behind send_events {met(pipelined)}; "
          f"backlog drain {met(drain)}; end to end behind one send_event thread {met(per_event)}")

    info["loadavg_at_end"] = S.loadavg()
    path = S.write_result(NAME, {
        "benchmark": NAME,
        "database": "PostgreSQL " + S.postgres_version(), "broker": "Redis (db 14)",
        "events": args.events, "messages": args.messages, "models": len(MODELS), "chunk": CHUNK,
        "debounce_seconds": DEBOUNCE, "repeats": args.repeats, "worker_prefetch_window": worker.prefetch,
        "bare_loop": {"what": "the lean baseline's publish rate (kombu Producer.publish, one producer, no sent event, "
                              "result ignored)", "median_msgs_per_s": lean_pub},
        "lean_baseline": {"median_publish_msgs_per_s": lean_pub, "median_end_to_end_events_per_s": lean_e2e,
                          "runs": runs["lean"]},
        "send_task_alone": {"median_msgs_per_s": med("send_task", "msgs_per_s"), "runs": runs["send_task"]},
        "worker_path": {"what": "send_event + the events worker, first send -> last row stored", "events_per_s": per_event,
                        "median_send_msgs_per_s": med("per_event", "send_msgs_per_s"), "runs": runs["per_event"]},
        "pipelined_path": {"what": "send_events (500 a round trip) + the events worker, first send -> last row stored",
                           "events_per_s": pipelined, "median_send_msgs_per_s": med("pipelined", "send_msgs_per_s"),
                           "runs": runs["pipelined"]},
        "drain": {"events_per_s": drain, "median_send_event_alone_msgs_per_s": med("drain", "send_msgs_per_s"),
                  "runs": runs["drain"]},
        "batch_path": {"median_events_per_s": batch, "runs": runs["batch"]},
        "copy_ceiling": {"median_rows_per_s": copy, "runs": runs["copy"]},
        "ratio_batch_over_bare": {"of_medians": batch / lean_pub, "paired_runs": ratios["batch_over_lean_publish"]["paired"]},
        "ratios": ratios,
        "target_per_event_events_per_s": {"target": TARGET_PER_EVENT, "pipelined_met": pipelined >= TARGET_PER_EVENT,
                                           "drain_met": drain >= TARGET_PER_EVENT,
                                           "send_event_loop_met": per_event >= TARGET_PER_EVENT},
        "problems": problems,
        "machine": info,
    })
    print(f"results: {path}")
    if problems:
        for p in problems:
            S.banner(p)
        return 1
    print("OK: no event lost on any path, exactly one retrain per model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
