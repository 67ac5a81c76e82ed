"""The services' exceptions as HTTP answers with a one-line `detail` (the same text the CLI prints):
unknown model, version, run or request 404; a state that forbids the operation 409 (a lost
compare-and-swap, a request already taken, two versions never scored on the same holdout); a server
the configuration names that does not answer 503. Validation errors 422, naming each field."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from retrainer.config import UnknownModel
from retrainer.models.base import ArtifactError
from retrainer.services.errors import (
    NoProductionVersion,
    NotFound,
    PromotionConflict,
    RequestConflict,
    ServiceUnavailable,
)
from retrainer.services.registry import ExpectedVersionError, RollbackRefused
from retrainer.services.reports import NotComparable

NOT_FOUND = (UnknownModel, NotFound)
CONFLICT = (PromotionConflict, RequestConflict, NotComparable, ExpectedVersionError, RollbackRefused, NoProductionVersion,
            ArtifactError)


def _detail(code: int, exc: BaseException, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": str(exc).splitlines()[0] if str(exc) else type(exc).__name__, **extra},
                        status_code=code)


async def not_found(_: Request, exc: Exception) -> JSONResponse:
    return _detail(status.HTTP_404_NOT_FOUND, exc)


async def conflict(_: Request, exc: Exception) -> JSONResponse:
    extra = {}
    if isinstance(exc, PromotionConflict):  # what a retrying script needs: production as it is now
        extra = {"model": exc.model, "expected": exc.expected, "actual": exc.actual}
    return _detail(status.HTTP_409_CONFLICT, exc, **extra)


async def unavailable(_: Request, exc: Exception) -> JSONResponse:
    return _detail(status.HTTP_503_SERVICE_UNAVAILABLE, exc)


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def database_error(database_url: str) -> Handler:
    """A database error met while serving: unreachable or without the schema if that is the cause (the
    CLI's line), else the driver's first line; 503 either way, the password masked."""
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        from retrainer.tasks.health import explain_database_error

        return JSONResponse({"detail": explain_database_error(database_url, exc)},  # type: ignore[arg-type]
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return handle


def broker_error(broker_url: str) -> Handler:
    """The broker went away between the probe and the send (kombu's OperationalError)."""
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        from retrainer.services.errors import BrokerUnreachable
        from retrainer.tasks.health import broker_reason

        return _detail(status.HTTP_503_SERVICE_UNAVAILABLE, BrokerUnreachable(broker_url, broker_reason(exc)))
    return handle


async def invalid(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 list (loc, msg, type) without the rejected input (it may be large or private), plus
    one line naming every bad field: `body.priority: Input should be 'low', 'normal' or 'high'`."""
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
              for e in exc.errors()]  # type: ignore[attr-defined]
    message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": errors, "message": message}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def install(app: FastAPI, database_url: str, broker_url: str) -> None:
    import sqlalchemy.exc
    from kombu.exceptions import OperationalError as BrokerError

    for cls in NOT_FOUND:
        app.add_exception_handler(cls, not_found)
    for cls in CONFLICT:
        app.add_exception_handler(cls, conflict)
    app.add_exception_handler(ServiceUnavailable, unavailable)
    app.add_exception_handler(sqlalchemy.exc.DBAPIError, database_error(database_url))
    app.add_exception_handler(BrokerError, broker_error(broker_url))
    app.add_exception_handler(RequestValidationError, invalid)
