"""Model versions and the production pointer.

The database holds the invariant (a partial unique index: one production row per model); promotion
is a compare-and-swap, "make v7 production only if v5 still is", so two racing promoters cannot both
win and a stale decision cannot overwrite a newer one.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import ModelVersion, VersionStatus
from retrainer.models.base import Family
from retrainer.services import artifacts, audit
from retrainer.services.errors import ModelVersionNotFound, NoProductionVersion, PromotionConflict


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


def swap_production(session: Session, model: str, new_id: str, expected_id: str | None) -> ModelVersion:
    """Compare-and-swap inside the caller's transaction; raises PromotionConflict if it lost, and
    ExpectedVersionError if `expected_id` names no version of `model`."""
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
    elif (current := production(session, model)) is not None:
        raise PromotionConflict(model, None, current.version_id)
    promoted = session.execute(
        sa.update(ModelVersion)
        .where(ModelVersion.version_id == new_id, ModelVersion.model == model)
        .values(is_production=True, status=VersionStatus.ACTIVE, promoted_at=clock.now(), previous_production_id=expected_id)
        .execution_options(synchronize_session=False)
    )
    if promoted.rowcount != 1:
        raise ModelVersionNotFound(new_id)
    # A concurrent first promotion on another connection trips the partial unique index at flush.
    session.flush()
    version = get(session, new_id)
    session.refresh(version)
    return version


def promote(session: Session, version_id: str, expected_id: str | None = None, actor: str = "cli") -> ModelVersion:
    """Manual promotion. `expected_id` defaults to whatever is production now (read in this transaction)."""
    version = get(session, version_id)
    if version.status == VersionStatus.FAILED:
        raise ValueError(f"model version {version_id!r} failed training and cannot be promoted")
    if expected_id is not None:  # refused even when there is nothing to swap: the caller is confused
        _check_expected(session, version.model, version_id, expected_id)
    current = production(session, version.model)
    if current is not None and current.version_id == version_id:
        return version
    expected = expected_id if expected_id is not None else (current.version_id if current else None)
    load_estimator(version)  # refuse to promote an artifact that would not load (checksum, format)
    swap_production(session, version.model, version_id, expected)
    audit.record(
        session, "promotion", f"{version_id} promoted to production by {actor} (replacing {expected or 'none'})",
        model=version.model, version_id=version_id, previous=expected, actor=actor,
    )
    return version


def rollback(session: Session, model: str, actor: str = "cli") -> ModelVersion:
    """Make the version that production replaced production again."""
    current = production(session, model)
    if current is None:
        raise NoProductionVersion(model)
    if not current.previous_production_id:
        raise LookupError(f"model {model!r}: {current.version_id} replaced nothing; there is no version to roll back to")
    target = get(session, current.previous_production_id)
    load_estimator(target)
    # Swap by hand so the target keeps its own history of what it once replaced.
    previous_of_target = target.previous_production_id
    swap_production(session, model, target.version_id, current.version_id)
    target.previous_production_id = previous_of_target
    audit.record(
        session, "rollback", f"{model}: rolled back from {current.version_id} to {target.version_id} by {actor}",
        model=model, version_id=target.version_id, previous=current.version_id, actor=actor,
    )
    return target


def archive_old(session: Session, model: str, keep: int) -> list[str]:
    """Archive versions beyond the newest `keep`, never production nor the one it replaced."""
    current = production(session, model)
    protected = {current.version_id, current.previous_production_id} if current else set()
    live = session.scalars(
        sa.select(ModelVersion)
        .where(ModelVersion.model == model, ModelVersion.status != VersionStatus.ARCHIVED)
        .order_by(ModelVersion.number.desc())
    ).all()
    archived = []
    for version in live[keep:]:
        if version.version_id not in protected:
            version.status = VersionStatus.ARCHIVED
            archived.append(version.version_id)
    if archived:
        audit.record(session, "archive", f"{model}: archived {', '.join(archived)} (keeping {keep})", model=model, versions=archived)
    return archived
