"""Small builders the service tests share: observations from the synthetic generator, real versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer.config import Settings
from retrainer.db.records import ModelVersion, Observation
from retrainer.demo import synthetic
from retrainer.models.base import Family, load_family
from retrainer.services import artifacts

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 3, 1, tzinfo=UTC)


def add_observations(session: Session, rows: list[synthetic.Row], model: str = "ctr", prefix: str = "obs") -> None:
    session.add_all([
        Observation(model=model, event_id=f"{prefix}-{i}", features=r.features, label=r.label, event_time=r.event_time,
                    source="test")
        for i, r in enumerate(rows)
    ])
    session.flush()


def seed(session: Session, n: int = 300, model: str = "ctr", seed: int = 7, start: datetime = START,
         end: datetime = END, drift_from: datetime | None = None, prefix: str = "obs") -> list[synthetic.Row]:
    rows = synthetic.generate(n, start, end, seed=seed, drift_from=drift_from)
    add_observations(session, rows, model, prefix)
    return rows


def frame_of(rows: list[synthetic.Row]) -> pd.DataFrame:
    return pd.DataFrame([r.features for r in rows])


def fit(rows: list[synthetic.Row], **params: Any) -> Family:
    return load_family("ctr", {"n_estimators": 20, "max_depth": 3, **params}).fit(
        frame_of(rows), pd.Series([r.label for r in rows]))


def make_version(session: Session, settings: Settings, number: int, model: str = "ctr",
                 estimator: Family | None = None, production: bool = False, **fields: Any) -> ModelVersion:
    """A ModelVersion backed by a real, checksummed artifact file."""
    if estimator is None:
        estimator = fit(synthetic.generate(80, START, START + timedelta(days=5), seed=number))
    path, checksum = artifacts.write(estimator, Path(settings.artifact_dir) / model, f"{model}-test-v{number}")
    version = ModelVersion(
        version_id=f"{model}-v{number}", model=model, number=number, family="ctr", algorithm=estimator.algorithm,
        is_production=production, num_training_samples=80, training_duration_seconds=0.1,
        hyperparameters=estimator.get_params(), metrics={}, artifact_uri=str(path), artifact_sha256=checksum,
        library_versions=estimator.library_versions(), **fields,
    )
    session.add(version)
    session.flush()
    return version


def count(session: Session, table: Any, *where: Any) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(table).where(*where)) or 0


def corrupt(path: str | Path) -> None:
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 3] ^= 0x20
    Path(path).write_bytes(bytes(data))


def churn_csv(path: Path, n: int = 240, start: datetime = START, seed: int = 3) -> Path:
    """A user's own CSV: a categorical `plan` (basic, pro, team), a boolean `trial`, a number `spend`,
    the label `churned` (0/1, mostly decided by plan and trial) and an event time `at`, one row an hour."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lines = ["customer,plan,spend,trial,churned,at"]
    for i in range(n):
        plan = ("basic", "pro", "team")[i % 3]
        trial = bool(rng.random() < 0.5)
        spend = round(float(rng.uniform(5, 100)), 2)
        risk = {"basic": 0.7, "pro": 0.3, "team": 0.1}[plan] + (0.2 if trial else -0.05)
        churned = int(rng.random() < risk)
        at = (start + timedelta(hours=i)).isoformat()
        lines.append(f"c{i},{plan},{spend},{'true' if trial else 'false'},{churned},{at}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
