"""A retrain reads rows that were stored before today's validation existed (or by a direct SQL
INSERT): the three rows that made 11 of 11 retrains fail in step 1 no longer fail any."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa

from retrainer import clock
from retrainer.config import Settings
from retrainer.db import session_scope
from retrainer.demo import synthetic
from retrainer.services import retrain
from tests.services.builders import END, START, add_observations


def poison_rows(dialect: str, features: dict[str, float]) -> list[dict[str, str]]:
    """An event time after year 10,000 in UTC, a label of 1.7e308, an integer feature of 10**400."""
    huge_int = json.dumps(features).replace('"hook_strength": ', '"hook_strength": 1' + "0" * 400 + ', "was": ')
    year_10000 = "9999-12-31T23:00:00-05:00" if dialect == "postgresql" else "10000-01-01 04:00:00.000000"
    return [
        {"event_id": "poison-time", "features": json.dumps(features), "label": "0.03", "event_time": year_10000},
        {"event_id": "poison-label", "features": json.dumps(features), "label": "1.7e308", "event_time": "2024-02-01 10:00:00"},
        {"event_id": "poison-int", "features": huge_int, "label": "0.03", "event_time": "2024-02-01 11:00:00"},
    ]


def test_a_retrain_succeeds_among_poison_rows(settings: Settings) -> None:
    rows = synthetic.generate(300, START, END, seed=21)
    with session_scope(settings.database_url) as session:
        add_observations(session, rows)
        for row in poison_rows(session.get_bind().dialect.name, rows[0].features):
            session.execute(sa.text(
                "INSERT INTO observations (model, event_id, features, label, event_time, source, created_at) "
                f"VALUES ('ctr', :event_id, :features, {row.pop('label')}, :event_time, 'sql', '2024-03-01 00:00:00')"
            ), row)
    with clock.frozen(datetime(2024, 6, 1, tzinfo=UTC)), session_scope(settings.database_url) as session:
        result = retrain.retrain(session, settings, "ctr")
    assert result["status"] == "retrained", result
    assert result["samples"] + result["holdout"]["rows"] == 300  # the poison rows were not trained on
    with clock.frozen(datetime(2024, 6, 2, tzinfo=UTC)), session_scope(settings.database_url) as session:
        again = retrain.retrain(session, settings, "ctr")  # and the next one, too
    assert again["status"] in ("retrained", "kept"), again
