"""Bearer-token access: every write needs `Authorization: Bearer <api_token>`, reads too when
`api_read_token_required` is set. No token configured means writes are refused (403), never open.
The token is compared in constant time and never logged nor echoed."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from retrainer.api.context import ContextDep

# auto_error=False: this module chooses the status (403 not configured, 401 missing or wrong);
# HTTPBearer still puts the scheme in the OpenAPI document, so /docs offers "Authorize".
_bearer = HTTPBearer(auto_error=False, description="RETRAINER_API_TOKEN (api_token in retrainer.yaml)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

NOT_CONFIGURED = ("the API has no token configured, so it refuses {what}: set RETRAINER_API_TOKEN (or api_token "
                  "in retrainer.yaml) and send it as `Authorization: Bearer <token>`")


def _check(ctx: ContextDep, credentials: HTTPAuthorizationCredentials | None, what: str) -> None:
    configured = ctx.settings.api_token.get_secret_value().strip() if ctx.settings.api_token else ""
    if not configured:  # an empty RETRAINER_API_TOKEN is no token
        raise HTTPException(status.HTTP_403_FORBIDDEN, NOT_CONFIGURED.format(what=what))
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{what} need an `Authorization: Bearer <token>` header",
                            headers=challenge)
    if not secrets.compare_digest(credentials.credentials.encode(), configured.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid bearer token",
                            headers=challenge | {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def write_access(ctx: ContextDep, credentials: Credentials) -> None:
    _check(ctx, credentials, "writes")


def read_access(ctx: ContextDep, credentials: Credentials) -> None:
    if ctx.settings.api_read_token_required:
        _check(ctx, credentials, "reads")


WriteAccess = Depends(write_access)
ReadAccess = Depends(read_access)
