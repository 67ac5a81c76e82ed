"""PostgreSQL down during ingestion: through a ~10 s outage the per-event path retries until every event the
producer was told was sent is stored exactly once; the batch path stores whole chunks or raises to its caller.

"Half-written" is checked through the coalescing counter: an event is stored in the same transaction that
adds it to its model's pending retrain request, so the requests' event counts must add up to the rows.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from retrainer.db import get_engine, session_scope
from retrainer.db.records import Observation, RetrainRequest, SystemEvent
from retrainer.demo import synthetic
from retrainer.tasks.producer import publish_events
from tests.faults.servers import log_lines, unhealthy
from tests.support import wait_until
from tests.tasks.helpers import count

OUTAGE_SECONDS = 10.0


def counted_events(url: str) -> int:
    """Events the pending/closed retrain requests were told about (one transaction with each row)."""
    with session_scope(url) as session:
        return int(session.scalar(sa.select(sa.func.coalesce(sa.func.sum(RetrainRequest.event_count), 0))))


@pytest.mark.worker
def test_per_event_path_stores_every_sent_event_once_across_an_outage(
    own_postgres, fault_db, fault_settings, start_worker, make_celery, event_storm
) -> None:
    settings = fault_settings()
    worker = start_worker(settings, queues="events", concurrency=2)
    storm = event_storm(make_celery(settings), rate=50)

    # the outage hits a running pipeline: the first events are stored
    wait_until(lambda: count(fault_db, Observation, Observation.source == "event") >= 20, timeout=30, interval=0.1,
               what="the first stored events")
    own_postgres.stop("fast")  # open transactions are rolled back, sessions closed
    time.sleep(OUTAGE_SECONDS)
    own_postgres.start()
    back = time.monotonic()
    time.sleep(3)
    storm.stop()

    # A task that failed during the outage waits its jittered backoff (0..2**(retries+1) s) before the
    # next try: after a 10 s outage, usually under a minute.
    try:
        wait_until(lambda: not storm.unstored(fault_db), timeout=90, interval=0.25, what="every sent event to be stored")
    except TimeoutError:
        pass
    caught_up = time.monotonic() - back
    unstored = storm.unstored(fault_db)
    stored = count(fault_db, Observation, Observation.source == "event")
    output = worker.output()
    print(f"\nPostgreSQL down {OUTAGE_SECONDS:.0f} s: {len(storm.sent)} events sent, {len(storm.refused)} refused, "
          f"{stored} stored, {len(unstored)} not stored; {output.count('Retry in')} retries, "
          f"{output.count('raised unexpected')} tasks failed; caught up {caught_up:.0f} s after PostgreSQL returned")

    problems = unhealthy(worker)
    if unstored:
        problems.append(f"{len(unstored)} of {len(storm.sent)} sent events are not stored: {unstored[:20]}; "
                        f"their log lines: {log_lines([worker], [storm.task_ids[e] for e in unstored[:10]])}")
    if stored != len(storm.sent) - len(unstored):
        problems.append(f"{stored} event rows for {len(storm.sent) - len(unstored)} stored events")
    if counted_events(fault_db) != stored:
        problems.append(f"retrain requests count {counted_events(fault_db)} events for {stored} rows")
    if rejected := count(fault_db, SystemEvent, SystemEvent.kind == "event_rejected"):
        problems.append(f"{rejected} events rejected; the outage is no reason to reject an event")
    assert len(storm.sent) > 500, "the producer hardly sent anything: the storm did not cover the outage"
    assert not problems, "\n\n".join(problems)


def test_batch_path_stores_whole_chunks_or_raises_across_an_outage(
    own_postgres, fault_db, fault_settings, make_celery
) -> None:
    settings, chunk, chunks = fault_settings(), 2000, 10
    app = make_celery(settings)
    now = datetime.now(UTC)
    rows = synthetic.generate(chunk * chunks, now - timedelta(days=2), now, seed=5)
    batch = [{"type": "purchase", "model": "ctr", "features": r.features, "value": r.label, "event_id": f"batch-{i}"}
             for i, r in enumerate(rows)]

    # The server dies (immediate: as in a crash) with the third chunk's transaction open: its rows are
    # inserted and its COMMIT is about to be sent.
    commits = 0

    def crash_before_third_commit(_conn: sa.Connection) -> None:
        nonlocal commits
        commits += 1
        if commits == 3:
            own_postgres.stop("immediate")

    engine = get_engine(settings.database_url)
    sa.event.listen(engine, "commit", crash_before_third_commit)
    try:
        with pytest.raises(sa.exc.OperationalError) as first:
            publish_events(batch, settings=settings, chunk=chunk, via=app)
    finally:
        sa.event.remove(engine, "commit", crash_before_third_commit)
    down = time.monotonic()

    started = time.monotonic()  # while the server is down, a call fails at once instead of hanging
    with pytest.raises(sa.exc.OperationalError):
        publish_events(batch, settings=settings, chunk=chunk, via=app)
    refused_in = time.monotonic() - started

    # The batch path never waits for the server (the caller gets the error), so a short outage tells
    # as much as a long one here.
    time.sleep(max(0.0, 2 - (time.monotonic() - down)))
    own_postgres.start()
    with session_scope(fault_db) as session:
        stored = set(session.scalars(sa.select(Observation.event_id)))
    print(f"\nbatch of {len(batch)} ({chunks} chunks of {chunk}), PostgreSQL crashed before the third COMMIT: "
          f"{len(stored)} rows stored; the call raised {str(first.value.orig).splitlines()[0]!r}; "
          f"a call during the outage raised after {refused_in:.2f} s")
    assert stored == {f"batch-{i}" for i in range(2 * chunk)}, f"{len(stored)} rows: not the first two whole chunks"
    assert counted_events(fault_db) == len(stored)
    assert refused_in < 5

    # The caller's answer to the error: send the same batch again; the stored chunks are duplicates.
    again = publish_events(batch, settings=settings, chunk=chunk, via=app)
    assert (again.stored, again.duplicates, again.rejected) == (len(batch) - len(stored), len(stored), [])
    assert count(fault_db, Observation) == counted_events(fault_db) == len(batch)
