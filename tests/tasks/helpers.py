"""Helpers shared by the task integration tests: seed data, read tables, small numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from retrainer.db import session_scope
from retrainer.db.records import Observation
from retrainer.demo import synthetic

# A fit that takes long enough (about a second or two on one core) for another message to arrive
# while it runs: many deep trees at a low learning rate.
SLOW_PARAMS = {"n_estimators": 3000, "max_depth": 6, "learning_rate": 0.02}


def seed_observations(url: str, n: int, model: str = "ctr", seed: int = 7, days: float = 30,
                      drift_from: datetime | None = None, prefix: str | None = None,
                      created_at: datetime | None = None) -> int:
    """`n` synthetic labelled rows spread over the last `days` days, inserted in one statement (stored
    at `created_at`, default a minute ago)."""
    end = datetime.now(UTC) - timedelta(minutes=1)
    rows = synthetic.generate(n, end - timedelta(days=days), end, seed=seed, drift_from=drift_from)
    prefix = prefix or f"seed-{model}-{seed}"
    values = [
        {"model": model, "event_id": f"{prefix}-{i}", "features": r.features, "label": r.label,
         "event_time": r.event_time, "source": "seed", "created_at": created_at or end}
        for i, r in enumerate(rows)
    ]
    with session_scope(url) as session:
        session.execute(sa.insert(Observation), values)
    return n


def purchase(model: str = "ctr", seed: int = 0, **extra: Any) -> dict[str, Any]:
    """One valid purchase event payload."""
    row = synthetic.generate(1, datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC), seed=seed)[0]
    return {"type": "purchase", "model": model, "features": row.features, "value": row.label} | extra


def count(url: str, record: Any, *where: Any) -> int:
    with session_scope(url) as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(record).where(*where)) or 0)


def rows(url: str, record: Any, *where: Any, order_by: Any = None) -> list[Any]:
    """Detached rows (the session closes; expire_on_commit is off, so attributes stay readable)."""
    stmt = sa.select(record).where(*where)
    if order_by is not None:
        stmt = stmt.order_by(order_by)
    with session_scope(url) as session:
        return list(session.scalars(stmt))
