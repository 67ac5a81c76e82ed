"""GET /metrics in the Prometheus text format (prometheus_client). A custom collector reads the
database (services/metrics_snapshot.py) and the broker's queues at each scrape, so every API process
answers the same figures and nothing is counted in memory. Reads are governed like every read
(`api_read_token_required`: Prometheus then sends the bearer token, its `authorization` setting)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from retrainer.api.auth import ReadAccess
from retrainer.api.context import Context, ContextDep
from retrainer.services import metrics_snapshot
from retrainer.services.metrics_snapshot import Snapshot

if TYPE_CHECKING:
    from celery import Celery
    from prometheus_client import Metric

log = logging.getLogger(__name__)
router = APIRouter(tags=["metrics"], dependencies=[ReadAccess])

BROKER_TIMEOUT = 3.0  # seconds: a broker that does not answer costs a scrape this much, not minutes


def queue_lengths(app: Celery, timeout: float = BROKER_TIMEOUT) -> dict[str, int]:
    """Messages waiting in each of retrainer's queues (not those a worker holds unacknowledged), as kombu
    counts them: on Redis the LLEN of the queue's lists (one per priority step, under the broker's key
    prefix), on the embedded broker the queue's message files in its folder. Empty for a broker kombu
    does not emulate (AMQP): not counted."""
    from kombu.transport import virtual

    from retrainer.tasks.app import QUEUES

    # One connection attempt bounded by `timeout` (Redis' socket timeouts; others ignore them), not kombu's retries
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "max_retries": 1, "interval_start": 0,
               "interval_step": 0}
    with app.connection_for_write(connect_timeout=timeout, transport_options=options) as conn:
        channel = conn.default_channel
        if not isinstance(channel, virtual.Channel):
            return {}
        # kombu's own count, what its queue_declare reports. Not a passive queue_declare: on Redis that
        # first asks EXISTS, which kombu 5.7 sends without the global key prefix, so it finds no queue.
        return {queue: int(channel._size(queue)) for queue in QUEUES}


def families(snap: Snapshot, queues: dict[str, int] | None) -> Iterator[Metric]:
    """The metric families of one scrape; `queues` None: the broker did not answer."""
    runs = CounterMetricFamily("retrainer_training_runs", "Finished training runs (completed, failed, skipped).",
                               labels=["model", "status", "trigger"])
    for (model, status, trigger), n in sorted(snap.runs.items()):
        runs.add_metric([model, status, trigger], n)
    active = GaugeMetricFamily("retrainer_training_runs_active", "Training runs queued or running now.",
                               labels=["model", "status"])
    for (model, status), n in sorted(snap.active_runs.items()):
        active.add_metric([model, status], n)
    duration = HistogramMetricFamily("retrainer_retrain_duration_seconds", "Duration of finished training runs.",
                                     labels=["model"])
    for model, d in sorted(snap.durations.items()):
        duration.add_metric([model], [(str(bound), n) for bound, n in d.buckets] + [("+Inf", d.count)], d.total_seconds)
    decisions = CounterMetricFamily("retrainer_decisions", "Training runs by outcome (retrained, kept, ...).",
                                    labels=["model", "outcome"])
    for (model, outcome), n in sorted(snap.decisions.items()):
        decisions.add_metric([model, outcome], n)
    yield from (runs, active, duration, decisions)

    info = InfoMetricFamily("retrainer_production_version", "The production version of each model.", labels=["model"])
    number = GaugeMetricFamily("retrainer_production_version_number", "The production version's number.",
                               labels=["model"])
    promoted = GaugeMetricFamily("retrainer_production_promoted_timestamp_seconds",
                                 "When the production version was promoted (Unix time).", labels=["model"])
    for model, p in sorted(snap.production.items()):
        info.add_metric([model], {"version": p.version_id})
        number.add_metric([model], p.number)
        if p.promoted_at is not None:
            promoted.add_metric([model], p.promoted_at.timestamp())
    yield from (info, number, promoted)

    live = GaugeMetricFamily("retrainer_live_metric", "Live metric of the production version over the accuracy "
                             "check's lookback (version \"\": no production version, every record).",
                             labels=["model", "version", "metric"])
    outcomes = GaugeMetricFamily("retrainer_live_outcomes", "Outcomes the live metrics are computed on.",
                                 labels=["model", "version"])
    threshold = GaugeMetricFamily("retrainer_live_threshold", "The accuracy check's threshold on its metric.",
                                  labels=["model", "metric"])
    for model, m in sorted(snap.live.items()):
        version = m.version_id or ""
        for name, value in sorted(m.metrics.items()):
            if value is not None:  # not measurable (no outcomes, R² of a constant): no sample
                live.add_metric([model, version, name], value)
        outcomes.add_metric([model, version], m.count)
        if m.threshold is not None:
            threshold.add_metric([model, m.metric], m.threshold)
    yield from (live, outcomes, threshold)

    share = GaugeMetricFamily("retrainer_drift_share", "Share of drifted features in the latest drift report.",
                              labels=["model"])
    drifted = GaugeMetricFamily("retrainer_drift_detected", "1 when the latest drift report found dataset drift.",
                                labels=["model"])
    for model, r in sorted(snap.drift.items()):
        if r.drifted_share is not None:
            share.add_metric([model], r.drifted_share)
        drifted.add_metric([model], float(r.drifted))
    pending = GaugeMetricFamily("retrainer_retrain_requests_pending", "Retrain requests waiting for a run.",
                                labels=["model"])
    for model, n in sorted(snap.pending_requests.items()):
        pending.add_metric([model], n)
    yield from (share, drifted, pending)

    broker_up = GaugeMetricFamily("retrainer_broker_up", "1 when the broker answered this scrape.")
    broker_up.add_metric([], 0.0 if queues is None else 1.0)
    waiting = GaugeMetricFamily("retrainer_queue_messages", "Messages waiting in each queue.", labels=["queue"])
    for queue, n in sorted((queues or {}).items()):
        waiting.add_metric([queue], n)
    yield from (broker_up, waiting)


class RetrainerCollector(Collector):
    """Collected at each scrape, from the database and broker of the API's settings."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        with self.ctx.session() as session:  # a database error propagates: the scrape is a 503
            snap = metrics_snapshot.take(session, self.ctx.settings)
        try:
            queues: dict[str, int] | None = queue_lengths(self.ctx.celery())
        except Exception as exc:  # noqa: BLE001  every transport's errors: the database figures still count
            log.warning("metrics: queue lengths not read, the broker did not answer (%s)", type(exc).__name__)
            queues = None
        yield from families(snap, queues)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}})
def metrics(ctx: ContextDep) -> Response:
    """Runs by model, status and trigger; retrain durations; decisions; live metric and production version
    per model; queue lengths; drift share; pending requests. Read at each scrape."""
    registry = CollectorRegistry(auto_describe=False)  # per scrape: no state shared between requests
    registry.register(RetrainerCollector(ctx))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
