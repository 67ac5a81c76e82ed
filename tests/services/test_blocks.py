"""retrainer.services.blocks / block_load: a load through compacted blocks reads what the JSONB load reads."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import Observation, ObservationBlock
from retrainer.services import blocks, columnar, dataset, schema
from retrainer.services.dataset import LABEL, TIME
from tests.services.builders import START, seed
from tests.services.test_columnar import odd_typed_rows
from tests.services.test_dataset import extreme_rows, insert_raw


@pytest.fixture
def db_url(pg_url: str) -> str:
    """PostgreSQL only (this module's `settings` and `session` too): blocks are PostgreSQL's; SQLite reads JSON."""
    return pg_url


@pytest.fixture
def pg(session: Session) -> Session:
    return session


def compact(session: Session, model: str, block_rows: int = 40) -> int:
    return blocks.compact(session, model, block_rows=block_rows, grace=-timedelta(days=36500))  # every row settled, even under a frozen clock


def assert_same_load(session: Session, model: str, used: schema.FeatureSchema, max_rows: int = 10_000) -> None:
    """The block load and the JSONB load (columnar.load) give the same frame and counts."""
    before = columnar.load(session, model, max_rows, used, "row_id", TIME, LABEL)
    after = dataset.load(session, model, max_rows, used)
    after.attrs["problems"] = {k: v for k, v in after.attrs["problems"].items() if k != "event_time"}
    # a key only ever null: columnar keeps an all-missing column, blocks leave it out (same after validate)
    empty = [c for c in before.columns if c not in after.columns and before[c].isna().all()]
    pd.testing.assert_frame_equal(before.drop(columns=empty), after)
    assert before.attrs == after.attrs
    a, b = dataset.validate(before, used), dataset.validate(after, used)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert (a.dropped, a.problems, a.unused) == (b.dropped, b.problems, b.unused)


def test_blocks_read_the_same_rows(pg: Session) -> None:
    seed(pg, n=300)
    used = schema.infer(dataset.load(pg, "ctr", 10_000))
    assert compact(pg, "ctr") == 8  # 7 full blocks of 40 and a partial one of 20
    assert compact(pg, "ctr") == 0  # idempotent
    for max_rows in (10_000, 300, 130, 41, 1):
        assert_same_load(pg, "ctr", used, max_rows)


def test_typed_mixed_and_odd_values(pg: Session) -> None:
    used = odd_typed_rows(pg)
    compact(pg, "churn", block_rows=30)
    assert_same_load(pg, "churn", used)
    assert_same_load(pg, "churn", used, 5)


def test_corrected_labels_deletes_late_commits_and_poison_rows(pg: Session) -> None:
    good = seed(pg, n=200)
    rows, _ = extreme_rows("postgresql", good[0].features)
    insert_raw(pg, rows)
    with clock.frozen(datetime(2024, 6, 1, tzinfo=UTC)):
        used = schema.infer(dataset.load(pg, "ctr", 10_000))
        compact(pg, "ctr")
        built = pg.scalars(sa.select(ObservationBlock).order_by(ObservationBlock.first_id)).all()
        assert len(built) > 3 and built[0].first_id == 1
        assert all(b.first_id == a.last_id + 1 for a, b in itertools.pairwise(built))  # contiguous ranges
        assert_same_load(pg, "ctr", used)
        # a corrected label (a Core UPDATE, as predictions.record_outcome writes it) stamps updated_at
        key = pg.scalar(sa.select(Observation.event_id).where(Observation.id == built[1].first_id + 3))
        pg.execute(sa.update(Observation).where(Observation.event_id == key).values(label=0.4242))
        assert pg.scalar(sa.select(Observation.updated_at).where(Observation.event_id == key)) is not None
        # a delete inside one block; a row committed late with an id inside another block's range
        pg.execute(sa.delete(Observation).where(Observation.id == built[2].first_id + 1))
        late_id = pg.scalar(sa.select(Observation.id).where(Observation.id.between(built[3].first_id, built[3].last_id))
                            .order_by(Observation.id.desc()).limit(1))
        late = pg.get(Observation, late_id)
        pg.delete(late)
        pg.flush()
        pg.execute(sa.insert(Observation).values(id=late_id, model="ctr", features=good[1].features, label=0.5,
                                                 event_time=START + timedelta(days=40), source="late"))
        pg.execute(sa.update(ObservationBlock).where(ObservationBlock.id == built[3].id)
                   .values(id_hash=ObservationBlock.id_hash + 1))  # the late row was not there at compaction
        assert set(blocks.stale(pg, "ctr")) == {built[2].id, built[3].id}
        frame = dataset.load(pg, "ctr", 10_000, used)
        assert frame.loc[frame["row_id"] == built[1].first_id + 3, LABEL].item() == 0.4242
        assert built[2].first_id + 1 not in set(frame["row_id"])
        for max_rows in (10_000, 100, 7):
            assert_same_load(pg, "ctr", used, max_rows)
        # the next compaction rebuilds the stale blocks; the same rows again
        assert compact(pg, "ctr") >= 2 and blocks.stale(pg, "ctr") == []
        assert_same_load(pg, "ctr", used)


def test_tail_and_partial_block(pg: Session) -> None:
    seed(pg, n=90)
    used = schema.infer(dataset.load(pg, "ctr", 10_000))
    compact(pg, "ctr", block_rows=50)
    seed(pg, n=30, start=START + timedelta(days=60), end=START + timedelta(days=61), prefix="more")
    assert_same_load(pg, "ctr", used)  # the 30 new rows are the tail
    assert compact(pg, "ctr", block_rows=50) == 2  # the partial block of 40 grows to 50; a new one of 20
    assert_same_load(pg, "ctr", used)


def test_payload_round_trip() -> None:
    import numpy as np
    cols = {"id": ("meta", np.arange(3, dtype=np.int64), None), "f:x": ("string", np.array([0, -1, 1], dtype=np.int32),
                                                                    ["a", "b é"])}
    rows, out = blocks.decode(blocks.encode(cols, 3))
    assert rows == 3 and out["f:x"][2] == ["a", "b é"] and list(out["id"][1]) == [0, 1, 2]
    with pytest.raises(ValueError):
        blocks.decode(json.dumps({}).encode() + b"xxxxxxxx")
