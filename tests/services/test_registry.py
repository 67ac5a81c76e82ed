"""retrainer.services.registry: the production pointer as a compare-and-swap, rollback, archiving."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer.config import Settings
from retrainer.db import session_scope
from retrainer.db.records import LedgerEntry, ModelVersion, SystemEvent, VersionStatus
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
    assert rollbacks[0].payload == {"version_id": "ctr-v2", "previous": "ctr-v3", "actor": "oncall",
                                    "action": "rollback", "reason": ""}
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


# --- the ledger, probation, rollback to any earlier production version ---------------------------

def ledger_rows(url: str, model: str = "ctr") -> list[tuple[str | None, str, str, str, str]]:
    """(from, to, action, actor, reason), oldest first."""
    from retrainer.services import ledger

    with session_scope(url) as s:
        return [(e.from_version_id, e.version_id, e.action, e.actor, e.reason)
                for e in reversed(ledger.history(s, model))]


def probation(url: str) -> dict[str, tuple[str | None, bool]]:
    with session_scope(url) as s:
        return {v.version_id: (v.probation, v.probation_ended_at is not None)
                for v in s.scalars(sa.select(ModelVersion).where(ModelVersion.model == "ctr"))}


def test_every_pointer_change_writes_one_ledger_row_and_probation(three_versions: str) -> None:
    url = three_versions
    with session_scope(url) as s:
        registry.promote(s, "ctr-v3", actor="bob", watch=False)  # probation off: not watched
        registry.rollback(s, "ctr")
    assert probation(url)["ctr-v3"] == (None, False)  # a rollback ends only a probation that was on
    with session_scope(url) as s:
        registry.promote(s, "ctr-v2", actor="alice", reason="better on the new campaign")
    with session_scope(url) as s:  # the pipeline's call: the policy, its run
        registry.swap_production(s, "ctr", "ctr-v3", "ctr-v2", actor="policy", reason="7% better", run_id="run_x")
    assert probation(url)["ctr-v3"] == ("watching", False)
    with session_scope(url) as s:
        registry.rollback(s, "ctr", actor="probation", reason="worse on live outcomes", action="auto_rollback")
    assert ledger_rows(url) == [
        (None, "ctr-v1", "promote", "test", ""),
        ("ctr-v1", "ctr-v3", "promote", "bob", ""),
        ("ctr-v3", "ctr-v1", "rollback", "cli", ""),
        ("ctr-v1", "ctr-v2", "promote", "alice", "better on the new campaign"),
        ("ctr-v2", "ctr-v3", "promote", "policy", "7% better"),
        ("ctr-v3", "ctr-v2", "auto_rollback", "probation", "worse on live outcomes"),
    ]
    after = probation(url)
    assert after["ctr-v3"] == ("rolled_back", True)  # it was watching: its probation failed
    # promoted by hand, it was watched too, until ctr-v3 replaced it first; a rollback target is not re-watched
    assert after["ctr-v2"] == ("superseded", True)
    with session_scope(url) as s:
        from retrainer.services import ledger

        assert ledger.for_run(s, "run_x").version_id == "ctr-v3"
        kinds = s.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "rollback").order_by(SystemEvent.id))
        assert [e.payload["action"] for e in kinds] == ["rollback", "auto_rollback"]


def test_a_lost_swap_writes_no_ledger_row(three_versions: str) -> None:
    url = three_versions
    with session_scope(url) as s, pytest.raises(PromotionConflict):
        registry.swap_production(s, "ctr", "ctr-v3", "ctr-v2")
    with session_scope(url) as s, pytest.raises(ValueError, match="swap action"):
        registry.swap_production(s, "ctr", "ctr-v3", "ctr-v1", action="demote")
    with session_scope(url) as s, pytest.raises(ValueError, match="rollback action"):
        registry.rollback(s, "ctr", action="promote")
    assert ledger_rows(url) == [(None, "ctr-v1", "promote", "test", "")]


@pytest.fixture
def four_promoted(settings: Settings) -> str:
    """ctr-v1 .. v4 each promoted in turn (v4 production), ctr-v5 trained, never production."""
    url = settings.database_url
    with session_scope(url) as s:
        for n in range(1, 6):
            make_version(s, settings, n)
    for n in range(1, 5):
        with session_scope(url) as s:
            registry.promote(s, f"ctr-v{n}", actor="test")
    return url


def test_rollback_to_any_earlier_production_version(four_promoted: str) -> None:
    url = four_promoted
    with session_scope(url) as s:
        assert registry.rollback(s, "ctr", actor="oncall", to="ctr-v1", reason="v2..v4 share the bad feed").version_id == "ctr-v1"
    after = state(url)
    assert [v for v, (prod, _, _) in after.items() if prod] == ["ctr-v1"]
    assert after["ctr-v1"][2] is None  # keeps its own history: a plain rollback from here has nowhere to go
    assert ledger_rows(url)[-1] == ("ctr-v4", "ctr-v1", "rollback", "oncall", "v2..v4 share the bad feed")
    with session_scope(url) as s:  # and forward again to a later one that once held production
        registry.rollback(s, "ctr", to="ctr-v3")
    assert [v for v, (prod, _, _) in state(url).items() if prod] == ["ctr-v3"]
    with session_scope(url) as s:  # without --to: what v3 had replaced
        assert registry.rollback(s, "ctr").version_id == "ctr-v2"


def test_rollback_to_a_version_from_before_the_ledger(four_promoted: str) -> None:
    url = four_promoted
    with session_scope(url) as s:  # an old database: no ledger rows, only promoted_at
        s.execute(sa.delete(LedgerEntry))
    with session_scope(url) as s:
        assert registry.rollback(s, "ctr", to="ctr-v2").version_id == "ctr-v2"


def test_rollback_to_refusals_name_the_problem(four_promoted: str, settings: Settings) -> None:
    url = four_promoted
    with session_scope(url) as s:
        make_version(s, settings, 1, model="roas")
    cases = {
        "ctr-v99": "cannot roll back 'ctr' to ctr-v99: no such version",
        "roas-v1": "cannot roll back 'ctr' to roas-v1: it is a version of 'roas', not of 'ctr'",
        "ctr-v4": "cannot roll back 'ctr' to ctr-v4: it is production already",
        "ctr-v5": "cannot roll back 'ctr' to ctr-v5: it never held production",
    }
    for to, message in cases.items():
        with session_scope(url) as s, pytest.raises(registry.RollbackRefused) as info:
            registry.rollback(s, "ctr", to=to)
        assert str(info.value).startswith(message), str(info.value)
    with session_scope(url) as s:
        v2 = registry.get(s, "ctr-v2").artifact_uri
        v3 = registry.get(s, "ctr-v3").artifact_uri
    corrupt(v2)
    Path(v3).unlink()
    with session_scope(url) as s, pytest.raises(ArtifactError) as info:
        registry.rollback(s, "ctr", to="ctr-v2")
    assert str(info.value).startswith(f"cannot roll back 'ctr' to ctr-v2: artifact {v2}: checksum mismatch")
    with session_scope(url) as s, pytest.raises(ArtifactError, match=r"to ctr-v3: artifact .*: file is missing"):
        registry.rollback(s, "ctr", to="ctr-v3")
    assert [v for v, (prod, _, _) in state(url).items() if prod] == ["ctr-v4"]
    assert len(ledger_rows(url)) == 4


# --- archiving -----------------------------------------------------------------------------------

def test_archiving_removes_the_artifacts_of_versions_that_never_held_production(settings: Settings) -> None:
    url = settings.database_url
    with session_scope(url) as s:
        for n in range(1, 8):
            make_version(s, settings, n)
    for n in (1, 2, 3):
        with session_scope(url) as s:
            registry.promote(s, f"ctr-v{n}")
    with session_scope(url) as s:
        registry.rollback(s, "ctr", to="ctr-v1")  # production v1 (replaced nothing); v2 and v3 once held it
        paths = {v.version_id: Path(v.artifact_uri) for v in registry.versions(s, "ctr")}
    sizes = {v: p.stat().st_size for v, p in paths.items()}
    # every kept candidate: v4..v7 trained; keep 2 -> v5..v2 beyond the newest two, v1 production
    with session_scope(url) as s:
        archived = registry.archive_old(s, "ctr", keep=2)
        assert paths["ctr-v5"].is_file()  # not before the commit
    assert archived == ["ctr-v5", "ctr-v4", "ctr-v3", "ctr-v2"]
    assert not paths["ctr-v5"].exists() and not paths["ctr-v4"].exists()
    for kept in ("ctr-v1", "ctr-v2", "ctr-v3", "ctr-v6", "ctr-v7"):  # production once, or among the newest
        assert paths[kept].is_file(), kept
    [event] = events(url, "archive")
    assert event.payload["artifacts_removed"] == ["ctr-v5", "ctr-v4"]
    assert event.payload["bytes_freed"] == sizes["ctr-v5"] + sizes["ctr-v4"] > 0
    with session_scope(url) as s:  # an archived version that once held production: still a rollback target
        assert registry.rollback(s, "ctr", to="ctr-v3").version_id == "ctr-v3"
    with session_scope(url) as s, pytest.raises(ValueError, match="archived and its artifact was removed"):
        registry.promote(s, "ctr-v4")
    with session_scope(url) as s, pytest.raises(ValueError, match="archived and never held production"):
        registry.swap_production(s, "ctr", "ctr-v4", "ctr-v3")


def test_archiving_in_a_transaction_that_rolls_back_keeps_every_file(settings: Settings) -> None:
    url = settings.database_url
    with session_scope(url) as s:
        for n in range(1, 5):
            make_version(s, settings, n)
        paths = [Path(v.artifact_uri) for v in registry.versions(s, "ctr")]
    with session_scope(url) as s:  # one session, as a run's: archive, fail, roll back, go on
        assert registry.archive_old(s, "ctr", keep=2) == ["ctr-v2", "ctr-v1"]
        with s.begin_nested():  # a savepoint released meanwhile is not the commit
            s.execute(sa.select(1))
        s.rollback()  # the run failed after archiving
        assert all(p.is_file() for p in paths)
        assert registry.archive_old(s, "ctr", keep=3) == ["ctr-v1"]
        s.close()  # closed without a commit: forgotten too
        s.commit()  # the session's next transaction removes nothing
    assert all(p.is_file() for p in paths)
    assert {status for _, status, _ in state(url).values()} == {"trained"}
