"""Request bodies and the small write responses. Unknown keys are refused (a typo such as `expect` for
`expected` would otherwise be ignored and the compare-and-swap skipped). Read responses are the
services/reports.py shapes, the same JSON as the CLI's --json output."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Reason = Annotated[str, Field(max_length=2000)]
Priority = Literal["low", "normal", "high"]
RequestStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]  # records.RequestStatus


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrainBody(Body):
    model: Name = Field(description="A configured model's name.")
    reason: Reason | None = Field(None, description="Why: kept on the request and shown in its decision.")
    priority: Priority = Field("normal", description="A high request runs before normal work waiting (Redis broker).")
    requested_by: Name = Field("api", description="Who asks: kept on the request and in the audit log.")


class PromoteBody(Body):
    expected: Name | None = Field(
        None, description="Compare-and-swap: promote only if this version is production now (409 otherwise). "
                          "Absent: whatever is production when the request is served.")
    reason: Reason = ""
    by: Name = Field("api", description="Who promotes: kept in the promotion ledger.")


class RollbackBody(Body):
    to: Name | None = Field(None, description="An earlier production version; absent: the one production replaced.")
    reason: Reason = ""
    by: Name = Field("api", description="Who rolls back: kept in the promotion ledger.")


class CancelBody(Body):
    by: Name = Field("api", description="Who cancels: kept on the request and in the audit log.")


class ProductionChange(BaseModel):
    """The answer to a promotion or a rollback (the CLI prints the first three keys)."""

    status: Literal["success"] = "success"
    message: str
    version_id: str
    model: str
    version: dict[str, Any]  # services/reports.py version_dict


class RetrainAccepted(BaseModel):
    """The request as `retrainer requests --json` shows it, with what was sent to follow it up."""

    model_config = ConfigDict(extra="allow")  # every key of retrain_requests.describe()

    request_id: int
    task_id: str
    message: str
    note: str
