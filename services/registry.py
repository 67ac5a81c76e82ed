"""Model versions and the production pointer.

The database holds the invariant (a partial unique index: one production row per model); promotion
is a compare-and-swap, "make v7 production only if v5 still is", so two racing promoters cannot both
win and a stale decision cannot overwrite a newer one. Every change of the pointer appends one row to
the promotion ledger (services/ledger.py) in the same transaction.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import ModelVersion, VersionStatus
from retrainer.models.base import ArtifactError, Family
from retrainer.services import artifacts, audit, ledger
from retrainer.services.errors import ModelVersionNotFound, NoProductionVersion, PromotionConflict

log = logging.getLogger(__name__)


def production(session: Session, model: str) -> ModelVersion | None:
    return session.scalar(sa.select(ModelVersion).where(ModelVersion.model == model, ModelVersion.is_production))


def get(session: Session, version_id: str) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise ModelVersionNotFound(version_id)
    return version


def versions(session: Session, model: str, limit: int = 50) -> list[ModelVersion]:
    return list(
        session.scalars(
            sa.select(ModelVersion).where(ModelVersion.model == model).order_by(ModelVersion.number.desc()).limit(limit)
        )
    )


def next_number(session: Session, model: str) -> int:
    current = session.scalar(sa.select(sa.func.max(ModelVersion.number)).where(ModelVersion.model == model))
    return (current or 0) + 1


def load_estimator(version: ModelVersion) -> Family:
    return artifacts.load(version.family, version.artifact_uri, version.artifact_sha256)


class ExpectedVersionError(LookupError):
    """The version a compare-and-swap expects is no version of the model it swaps (a typo, another model's)."""

    def __init__(self, model: str, version_id: str, expected_id: str, expected_model: str | None,
                 current: str | None):
        self.model, self.expected_id, self.expected_model = model, expected_id, expected_model
        what = "does not exist" if expected_model is None else f"is a version of {expected_model!r}, not of {model!r}"
        super().__init__(f"cannot promote {version_id}: the expected production version {expected_id!r} {what} "
                         f"(production of {model!r} is {current or 'none'})")


def _check_expected(session: Session, model: str, new_id: str, expected_id: str) -> None:
    expected = session.get(ModelVersion, expected_id)
    if expected is None or expected.model != model:
        current = production(session, model)
        raise ExpectedVersionError(model, new_id, expected_id, expected.model if expected else None,
                                   current.version_id if current else None)


class RollbackRefused(LookupError):
    """A rollback that cannot be done: the message names the version and why."""


class RollbackArtifactError(ArtifactError):
    """The version a rollback would return to has an artifact that does not verify or load."""

    def __init__(self, model: str, version_id: str, cause: ArtifactError):
        Exception.__init__(self, f"cannot roll back {model!r} to {version_id}: {cause}")
        self.path = cause.path


ROLLBACK_ACTIONS = ("rollback", "auto_rollback")


def swap_production(session: Session, model: str, new_id: str, expected_id: str | None, *, action: str = "promote",
                    actor: str = "policy", reason: str = "", run_id: str | None = None,
                    watch: bool = True) -> ModelVersion:
    """Compare-and-swap inside the caller's transaction; raises PromotionConflict if it lost, and
    ExpectedVersionError if `expected_id` names no version of `model`. Appends the ledger entry, and
    starts the promoted version's probation (`watch`) or ends the rolled-back one's."""
    if action not in ledger.ACTIONS:
        raise ValueError(f"swap action {action!r}: use one of {', '.join(ledger.ACTIONS)}")
    now = clock.now()
    if expected_id is not None:
        demoted = session.execute(
            sa.update(ModelVersion)  # scoped to the model: another model's production is never touched
            .where(ModelVersion.version_id == expected_id, ModelVersion.model == model, ModelVersion.is_production)
            .values(is_production=False, status=VersionStatus.TRAINED)
            .execution_options(synchronize_session=False)
        )
        if demoted.rowcount != 1:
            _check_expected(session, model, new_id, expected_id)
            current = production(session, model)
            raise PromotionConflict(model, expected_id, current.version_id if current else None)
        # The version leaving production ends the probation it was on: failed it (a rollback), or was
        # replaced by a newer promotion before a verdict (superseded).
        session.execute(
            sa.update(ModelVersion).where(ModelVersion.version_id == expected_id, ModelVersion.probation == "watching")
            .values(probation="rolled_back" if action in ROLLBACK_ACTIONS else "superseded", probation_ended_at=now)
            .execution_options(synchronize_session=False))
    elif (current := production(session, model)) is not None:
        raise PromotionConflict(model, None, current.version_id)
    values: dict[str, object] = {"is_production": True, "status": VersionStatus.ACTIVE, "promoted_at": now,
                                 "previous_production_id": expected_id}
    if action == "promote" and watch and expected_id is not None:  # a first version has nothing to be judged against
        values |= {"probation": "watching", "probation_ended_at": None}
    promoted = session.execute(
        sa.update(ModelVersion)
        # An archived version that never held production may have lost its artifact (archive_old)
        .where(ModelVersion.version_id == new_id, ModelVersion.model == model,
               sa.or_(ModelVersion.status != VersionStatus.ARCHIVED, ModelVersion.promoted_at.is_not(None)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if promoted.rowcount != 1:
        target = session.get(ModelVersion, new_id)
        if target is not None and target.model == model:
            raise ValueError(f"model version {new_id!r} is archived and never held production: its artifact is gone")
        raise ModelVersionNotFound(new_id)
    ledger.record(session, model, new_id, expected_id, action, actor, reason, run_id)
    log.info("%s: %s -> %s (%s by %s)%s", model, expected_id or "none", new_id, action, actor,
             f": {reason}" if reason else "")
    # A concurrent first promotion on another connection trips the partial unique index at flush.
    session.flush()
    version = get(session, new_id)
    session.refresh(version)
    if expected_id is not None and (old := session.get(ModelVersion, expected_id)) is not None:
        session.refresh(old)  # the bulk updates above bypassed the identity map
    return version


def promote(session: Session, version_id: str, expected_id: str | None = None, actor: str = "cli",
            reason: str = "", watch: bool = True) -> ModelVersion:
    """Manual promotion. `expected_id` defaults to whatever is production now (read in this transaction)."""
    version = get(session, version_id)
    if version.status == VersionStatus.FAILED:
        raise ValueError(f"model version {version_id!r} failed training and cannot be promoted")
    if expected_id is not None:  # refused even when there is nothing to swap: the caller is confused
        _check_expected(session, version.model, version_id, expected_id)
    current = production(session, version.model)
    if current is not None and current.version_id == version_id:
        return version
    if version.status == VersionStatus.ARCHIVED and not Path(version.artifact_uri).is_file():
        raise ValueError(f"model version {version_id!r} is archived and its artifact was removed: it cannot be promoted")
    expected = expected_id if expected_id is not None else (current.version_id if current else None)
    load_estimator(version)  # refuse to promote an artifact that would not load (checksum, format)
    swap_production(session, version.model, version_id, expected, action="promote", actor=actor, reason=reason,
                    watch=watch)
    audit.record(
        session, "promotion", f"{version_id} promoted to production by {actor} (replacing {expected or 'none'})"
        + (f": {reason}" if reason else ""),
        model=version.model, version_id=version_id, previous=expected, actor=actor, reason=reason,
    )
    return version


def rollback(session: Session, model: str, actor: str = "cli", to: str | None = None, reason: str = "",
             action: str = "rollback") -> ModelVersion:
    """Make an earlier production version production again: by default the one the current production
    replaced; with `to`, any version of the model that once held production and whose artifact still
    verifies and loads. `action` is rollback (a person) or auto_rollback (probation)."""
    if action not in ROLLBACK_ACTIONS:
        raise ValueError(f"rollback action {action!r}: use one of {', '.join(ROLLBACK_ACTIONS)}")
    current = production(session, model)
    if current is None:
        raise NoProductionVersion(model)
    if to is None:
        if not current.previous_production_id:
            raise LookupError(f"model {model!r}: {current.version_id} replaced nothing; there is no version to roll back to")
        target = get(session, current.previous_production_id)
    else:
        target = _earlier_production(session, model, current, to)
    try:
        load_estimator(target)
    except ArtifactError as exc:
        raise RollbackArtifactError(model, target.version_id, exc) from exc
    # Swap by hand so the target keeps its own history of what it once replaced.
    previous_of_target = target.previous_production_id
    swap_production(session, model, target.version_id, current.version_id, action=action, actor=actor, reason=reason)
    target.previous_production_id = previous_of_target
    audit.record(
        session, "rollback", f"{model}: rolled back from {current.version_id} to {target.version_id} by {actor}"
        + (f": {reason}" if reason else ""),
        model=model, version_id=target.version_id, previous=current.version_id, actor=actor, action=action,
        reason=reason,
    )
    return target


def _earlier_production(session: Session, model: str, current: ModelVersion, to: str) -> ModelVersion:
    """The version `to`, if a rollback may return to it; else RollbackRefused saying why not."""
    target = session.get(ModelVersion, to)
    refuse = f"cannot roll back {model!r} to {to}"
    if target is None:
        raise RollbackRefused(f"{refuse}: no such version")
    if target.model != model:
        raise RollbackRefused(f"{refuse}: it is a version of {target.model!r}, not of {model!r}")
    if target.version_id == current.version_id:
        raise RollbackRefused(f"{refuse}: it is production already")
    # promoted_at: databases from before the ledger; the ledger: every pointer change since
    if target.promoted_at is None and to not in ledger.held_production(session, model):
        raise RollbackRefused(f"{refuse}: it never held production (a rollback returns to an earlier production "
                              f"version; to make it production for the first time: retrainer promote {to})")
    return target


def once_production(session: Session, model: str) -> set[str]:
    """Versions of `model` that ever held production (promoted_at set, or named by the ledger)."""
    promoted = session.scalars(sa.select(ModelVersion.version_id).where(ModelVersion.model == model,
                                                                        ModelVersion.promoted_at.is_not(None)))
    return set(promoted) | ledger.held_production(session, model)


def archive_old(session: Session, model: str, keep: int) -> list[str]:
    """Archive versions beyond the newest `keep`, never production nor the one it replaced. Safe after
    any run (a promotion or a kept candidate). A version that never held production has its artifact
    file removed too, once the transaction commits; one that did keeps it, so a rollback still reaches it."""
    current = production(session, model)
    protected = {current.version_id, current.previous_production_id} if current else set()
    live = session.scalars(
        sa.select(ModelVersion)
        .where(ModelVersion.model == model, ModelVersion.status != VersionStatus.ARCHIVED)
        .order_by(ModelVersion.number.desc())
    ).all()
    candidates = [v for v in live[keep:] if v.version_id not in protected]
    if not candidates:
        return []
    held = once_production(session, model)
    archived, removed, freed = [], [], 0
    for version in candidates:
        # Conditional: a promoter racing on another connection wins; its version is then left alone.
        done = session.execute(
            sa.update(ModelVersion)
            .where(ModelVersion.version_id == version.version_id, ModelVersion.status != VersionStatus.ARCHIVED,
                   sa.not_(ModelVersion.is_production))
            .values(status=VersionStatus.ARCHIVED).execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:
            continue
        session.expire(version, ["status"])
        archived.append(version.version_id)
        if version.version_id not in held:
            freed += _size(version.artifact_uri)
            removed.append(version.version_id)
            _remove_after_commit(session, version.artifact_uri)
    if archived:
        log.info("%s: archived %s; %d artifact bytes of never-production versions freed at commit", model,
                 ", ".join(archived), freed)
        note = f"; removed the artifacts of {', '.join(removed)} (never production, {freed:,} bytes)" if removed else ""
        audit.record(session, "archive", f"{model}: archived {', '.join(archived)} (keeping {keep}){note}", model=model,
                     versions=archived, artifacts_removed=removed, bytes_freed=freed)
    return archived


def _size(uri: str) -> int:
    try:
        return Path(uri).stat().st_size
    except OSError:
        return 0


_REMOVE = "retrainer.registry.remove_after_commit"


def _remove_after_commit(session: Session, uri: str) -> None:
    """Delete the file once this transaction commits; forget it when the transaction (or a savepoint)
    rolls back or closes otherwise: the version is then not archived and must keep its artifact."""
    if _REMOVE not in session.info:
        session.info[_REMOVE] = []
        sa.event.listen(session, "after_commit", _removals_committed)
        sa.event.listen(session, "after_soft_rollback", _removals_dropped)
        sa.event.listen(session, "after_transaction_end", _removals_dropped_at_end)
    session.info[_REMOVE].append(uri)


def _removals_committed(session: Session) -> None:
    root = session.get_transaction()
    if root is not None and root.is_active:  # a savepoint released (this event fires for those too)
        return
    for uri in session.info.get(_REMOVE, []):
        artifacts.remove(uri)
    session.info[_REMOVE] = []


def _removals_dropped(session: Session, previous_transaction: object) -> None:
    session.info[_REMOVE] = []  # a savepoint's rollback too: a leaked file is harmless, a wrongly removed one is not


def _removals_dropped_at_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the root ended without a commit (after one, the list is already empty)
        session.info[_REMOVE] = []
