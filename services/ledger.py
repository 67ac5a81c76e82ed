"""The promotion ledger (promotion_ledger): one row per change of a model's production pointer, never
updated or deleted. services/registry.py writes it inside the swap's own transaction, so the ledger and
the pointer cannot disagree; everything else only reads it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import LedgerEntry

ACTIONS = ("promote", "rollback", "auto_rollback")


def record(session: Session, model: str, version_id: str, from_version_id: str | None, action: str, actor: str,
           reason: str, run_id: str | None = None) -> LedgerEntry:
    """Append one entry: `version_id` is production of `model` from now, it replaced `from_version_id`."""
    if action not in ACTIONS:
        raise ValueError(f"ledger action {action!r}: use one of {', '.join(ACTIONS)}")
    entry = LedgerEntry(model=model, version_id=version_id, from_version_id=from_version_id, action=action,
                        actor=(actor or "unknown")[:100], reason=reason or "", run_id=run_id, created_at=clock.now())
    session.add(entry)
    return entry


def history(session: Session, model: str, limit: int = 50) -> list[LedgerEntry]:
    """The model's entries, newest first."""
    return list(session.scalars(
        sa.select(LedgerEntry).where(LedgerEntry.model == model).order_by(LedgerEntry.id.desc()).limit(limit)))


def held_production(session: Session, model: str) -> set[str]:
    """Every version of `model` the ledger shows holding production (made production, or replaced)."""
    rows = session.execute(sa.select(LedgerEntry.version_id, LedgerEntry.from_version_id)
                           .where(LedgerEntry.model == model)).all()
    return {v for pair in rows for v in pair if v is not None}


def for_run(session: Session, run_id: str) -> LedgerEntry | None:
    """The entry a run's decision caused (its automatic promotion), if any."""
    return session.scalar(sa.select(LedgerEntry).where(LedgerEntry.run_id == run_id)
                          .order_by(LedgerEntry.id).limit(1))


def entry_dict(e: LedgerEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "model": e.model,
        "version_id": e.version_id,
        "from_version_id": e.from_version_id,
        "action": e.action,
        "actor": e.actor,
        "reason": e.reason,
        "run_id": e.run_id,
        "created_at": e.created_at.isoformat() if e.created_at else None,
    }
