"""/runs: one training run with its decision record, and its own log lines."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from retrainer.api.auth import ReadAccess
from retrainer.api.context import ContextDep
from retrainer.services import reports

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[ReadAccess])
RunId = Annotated[str, Path(max_length=200)]


@router.get("/{run_id}")
def run(ctx: ContextDep, run_id: RunId) -> dict[str, Any]:
    """Why a run ended as it did: each rule of its decision, what asked for it, the holdout, both evaluations
    with the paired test, the ledger entry it caused (`retrainer explain RUN --json`)."""
    with ctx.session() as session:
        return reports.explain(session, run_id)


@router.get("/{run_id}/logs")
def logs(ctx: ContextDep, run_id: RunId) -> dict[str, Any]:
    """The run's log lines as its worker recorded them (`logs` is null for a run from before run logs)."""
    with ctx.session() as session:
        return reports.logs(session, run_id)
