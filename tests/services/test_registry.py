"""retrainer.services.registry: the production pointer as a compare-and-swap, rollback, archiving."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer.config import Settings
from retrainer.db import session_scope
from retrainer.db.records import ModelVersion, SystemEvent, VersionStatus
from retrainer.models.base import ArtifactError
from retrainer.services import registry
from retrainer.services.errors import ModelVersionNotFound, NoProductionVersion, PromotionConflict
from retrainer.services.registry import ExpectedVersionError
from tests.services.builders import corrupt, make_version


def state(url: str, model: str = "ctr") -> dict[str, tuple[bool, str, str | None]]:
    """version_id -> (is_production, status, previous_production_id), read fresh from the database."""
    with session_scope(url) as s:
        return {
            v.version_id: (v.is_production, v.status.value, v.previous_production_id)
            for v in s.scalars(sa.select(ModelVersion).where(ModelVersion.model == model))
        }


def events(url: str, kind: str) -> list[SystemEvent]:
    with session_scope(url) as s:
        return list(s.scalars(sa.select(SystemEvent).where(SystemEvent.kind == kind).order_by(SystemEvent.id)))


@pytest.fixture
def three_versions(settings: Settings) -> str:
    """ctr-v1 production, ctr-v2 and ctr-v3 trained; committed."""
    url = settings.database_url
    with session_scope(url) as s:
        for n in (1, 2, 3):
            make_version(s, settings, n)
        registry.promote(s, "ctr-v1", actor="test")
    return url


def test_first_promotion_and_promote_by_compare_and_swap(three_versions: str) -> None:
    url = three_versions
    assert state(url)["ctr-v1"] == (True, "active", None)
    with session_scope(url) as s:
        registry.promote(s, "ctr-v2", expected_id="ctr-v1", actor="alice")
    after = state(url)
    assert after["ctr-v2"] == (True, "active", "ctr-v1")
    assert after["ctr-v1"] == (False, "trained", None)
    assert after["ctr-v3"] == (False, "trained", None)
    promotions = events(url, "promotion")
    assert [e.payload["version_id"] for e in promotions] == ["ctr-v1", "ctr-v2"]
    assert promotions[-1].payload["previous"] == "ctr-v1" and promotions[-1].payload["actor"] == "alice"
    with session_scope(url) as s:
        assert registry.production(s, "ctr").version_id == "ctr-v2"
        assert registry.production(s, "ctr").promoted_at is not None


def test_stale_expected_id_conflicts_and_changes_nothing(three_versions: str) -> None:
    url = three_versions
    # a decision made while v1 was production ...
    with session_scope(url) as s:
        registry.promote(s, "ctr-v2", actor="racer")  # ... is overtaken by another promoter
    before = state(url)
    with session_scope(url) as s:
        with pytest.raises(PromotionConflict) as info:
            registry.promote(s, "ctr-v3", expected_id="ctr-v1", actor="late")
        assert (info.value.expected, info.value.actual) == ("ctr-v1", "ctr-v2")
        assert "ctr-v1" in str(info.value) and "ctr-v2" in str(info.value)
    # even though that transaction committed, nothing changed
    assert state(url) == before
    assert [e.payload["version_id"] for e in events(url, "promotion")] == ["ctr-v1", "ctr-v2"]


def test_swap_expecting_none_while_production_exists_conflicts(three_versions: str) -> None:
    url = three_versions
    with session_scope(url) as s, pytest.raises(PromotionConflict):
        registry.swap_production(s, "ctr", "ctr-v3", None)
    assert state(url)["ctr-v1"][0] is True
    assert state(url)["ctr-v3"][0] is False


def test_promote_corrupt_artifact_refused(settings: Settings, three_versions: str) -> None:
    url = three_versions
    with session_scope(url) as s:
        path = registry.get(s, "ctr-v3").artifact_uri
    corrupt(path)
    before = state(url)
    with session_scope(url) as s:
        with pytest.raises(ArtifactError) as info:
            registry.promote(s, "ctr-v3")
        assert path in str(info.value)
    assert state(url) == before
    assert len(events(url, "promotion")) == 1


def test_promote_missing_artifact_refused(three_versions: str) -> None:
    url = three_versions
    with session_scope(url) as s:
        from pathlib import Path

        Path(registry.get(s, "ctr-v2").artifact_uri).unlink()
    with session_scope(url) as s, pytest.raises(ArtifactError, match="missing"):
        registry.promote(s, "ctr-v2")
    assert state(url)["ctr-v1"][0] is True


def test_promote_unknown_failed_and_current(settings: Settings, three_versions: str) -> None:
    url = three_versions
    with session_scope(url) as s, pytest.raises(ModelVersionNotFound, match="ctr-v99"):
        registry.promote(s, "ctr-v99")
    with session_scope(url) as s:
        registry.get(s, "ctr-v3").status = VersionStatus.FAILED
    with session_scope(url) as s, pytest.raises(ValueError, match="failed"):
        registry.promote(s, "ctr-v3")
    before = state(url)
    with session_scope(url) as s:
        assert registry.promote(s, "ctr-v1").version_id == "ctr-v1"  # already production: a no-op
    assert state(url) == before
    assert len(events(url, "promotion")) == 1


def test_rollback_returns_to_previous_production(three_versions: str) -> None:
    url = three_versions
    with session_scope(url) as s:
        registry.promote(s, "ctr-v2")
    with session_scope(url) as s:
        registry.promote(s, "ctr-v3")
    with session_scope(url) as s:
        target = registry.rollback(s, "ctr", actor="oncall")
        assert target.version_id == "ctr-v2"
    after = state(url)
    assert after["ctr-v2"] == (True, "active", "ctr-v1")  # keeps its own history
    assert after["ctr-v3"][0] is False
    assert sum(p for p, _, _ in after.values()) == 1
    rollbacks = events(url, "rollback")
    assert len(rollbacks) == 1
    assert rollbacks[0].model == "ctr"
    assert rollbacks[0].payload == {"version_id": "ctr-v2", "previous": "ctr-v3", "actor": "oncall"}
    assert "ctr-v3" in rollbacks[0].message and "ctr-v2" in rollbacks[0].message
    # and once more, back to what v2 had replaced
    with session_scope(url) as s:
        assert registry.rollback(s, "ctr").version_id == "ctr-v1"
    assert state(url)["ctr-v1"][0] is True
    with session_scope(url) as s, pytest.raises(LookupError, match="nothing"):
        registry.rollback(s, "ctr")  # v1 replaced nothing
    assert state(url)["ctr-v1"][0] is True


def test_rollback_without_production(settings: Settings, session: Session) -> None:
    with pytest.raises(NoProductionVersion):
        registry.rollback(session, "ctr")


def test_rollback_to_corrupt_version_refused(three_versions: str) -> None:
    url = three_versions
    with session_scope(url) as s:
        registry.promote(s, "ctr-v2")
        v1_path = registry.get(s, "ctr-v1").artifact_uri
    corrupt(v1_path)
    before = state(url)
    with session_scope(url) as s, pytest.raises(ArtifactError):
        registry.rollback(s, "ctr")
    assert state(url) == before
    assert events(url, "rollback") == []


def test_archive_old_keeps_newest_and_protects_production(settings: Settings) -> None:
    url = settings.database_url
    with session_scope(url) as s:
        for n in range(1, 8):
            make_version(s, settings, n)
        registry.promote(s, "ctr-v1")
    with session_scope(url) as s:
        registry.promote(s, "ctr-v2")  # production v2, it replaced v1: both protected
    with session_scope(url) as s:
        archived = registry.archive_old(s, "ctr", keep=3)
    assert archived == ["ctr-v4", "ctr-v3"]
    after = state(url)
    assert {v for v, (_, status, _) in after.items() if status == "archived"} == {"ctr-v3", "ctr-v4"}
    assert after["ctr-v2"][:2] == (True, "active")
    assert after["ctr-v1"][1] == "trained"
    for v in ("ctr-v5", "ctr-v6", "ctr-v7"):
        assert after[v][1] == "trained"
    [event] = events(url, "archive")
    assert event.payload["versions"] == ["ctr-v4", "ctr-v3"]
    with session_scope(url) as s:
        assert registry.archive_old(s, "ctr", keep=3) == []  # nothing new to archive
    assert len(events(url, "archive")) == 1


def test_models_are_independent(settings: Settings) -> None:
    url = settings.database_url
    with session_scope(url) as s:
        make_version(s, settings, 1, model="roas")
        make_version(s, settings, 1)
        registry.promote(s, "roas-v1")
        registry.promote(s, "ctr-v1")
        assert registry.next_number(s, "ctr") == 2
        assert registry.next_number(s, "churn") == 1
        assert [v.version_id for v in registry.versions(s, "roas")] == ["roas-v1"]
    assert state(url, "roas")["roas-v1"][0] is True
    assert state(url, "ctr")["ctr-v1"][0] is True


@pytest.fixture
def two_models(three_versions: str, settings: Settings) -> str:
    """three_versions plus roas-v1, production of its own model."""
    with session_scope(three_versions) as s:
        make_version(s, settings, 1, model="roas")
        registry.promote(s, "roas-v1", actor="test")
    return three_versions


def test_expecting_another_models_version_is_refused_and_changes_nothing(two_models: str) -> None:
    url = two_models
    before = state(url), state(url, "roas")
    with session_scope(url) as s, pytest.raises(ExpectedVersionError) as info:
        registry.promote(s, "ctr-v2", expected_id="roas-v1", actor="cli")
    assert str(info.value) == ("cannot promote ctr-v2: the expected production version 'roas-v1' is a version of "
                               "'roas', not of 'ctr' (production of 'ctr' is ctr-v1)")
    with session_scope(url) as s, pytest.raises(ExpectedVersionError):
        registry.promote(s, "ctr-v1", expected_id="roas-v1")  # even when ctr-v1 already is production
    # the pipeline's path: the swap itself is scoped to its model, so roas keeps its production version
    with session_scope(url) as s, pytest.raises(ExpectedVersionError):
        registry.swap_production(s, "ctr", "ctr-v3", "roas-v1")
    assert (state(url), state(url, "roas")) == before
    assert [e.payload["version_id"] for e in events(url, "promotion")] == ["ctr-v1", "roas-v1"]


def test_expecting_a_version_that_does_not_exist_is_refused(two_models: str) -> None:
    url = two_models
    before = state(url)
    with session_scope(url) as s, pytest.raises(ExpectedVersionError) as info:
        registry.promote(s, "ctr-v2", expected_id="ctr-v99")
    assert str(info.value) == ("cannot promote ctr-v2: the expected production version 'ctr-v99' does not exist "
                               "(production of 'ctr' is ctr-v1)")
    with session_scope(url) as s, pytest.raises(ExpectedVersionError):
        registry.swap_production(s, "ctr", "ctr-v2", "ctr-v99")
    assert state(url) == before


def test_racing_promoters_one_wins(three_versions: str) -> None:
    """Two promoters decided while ctr-v1 was production; they swap at the same time. One wins, the
    other's compare-and-swap sees the new production and fails (PostgreSQL: row lock, then re-check;
    SQLite: the second writer waits for the first)."""
    url = three_versions
    outcome: dict[str, BaseException | str] = {}

    def second_promoter() -> None:
        try:
            with session_scope(url) as s:
                registry.promote(s, "ctr-v3", expected_id="ctr-v1", actor="second")
            outcome["second"] = "won"
        except BaseException as exc:  # noqa: BLE001  (reported to the main thread)
            outcome["second"] = exc

    with session_scope(url) as s:
        registry.promote(s, "ctr-v2", expected_id="ctr-v1", actor="first")
        racer = threading.Thread(target=second_promoter)
        racer.start()
        racer.join(1.0)
        assert racer.is_alive(), "the second promoter did not wait for the first transaction"
    racer.join(30)
    assert not racer.is_alive()
    assert isinstance(outcome["second"], PromotionConflict), outcome
    assert outcome["second"].actual == "ctr-v2"
    after = state(url)
    assert [v for v, (prod, _, _) in after.items() if prod] == ["ctr-v2"]
    assert after["ctr-v3"][1] == "trained"
