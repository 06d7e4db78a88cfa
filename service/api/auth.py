"""API keys with two scopes: ``read`` (embed, identify, verify, gallery reads) and ``admin`` (also
gallery writes), sent as ``X-API-Key`` or ``Authorization: Bearer``. Declared through
``fastapi.security``, so /docs shows both schemes and its Authorize button. Keys are compared in
constant time. With no keys configured every route is open; ``lrface serve`` allows that on a
loopback address only, unless LRFACE_ALLOW_ANONYMOUS=true."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

SCOPES = {"read": 0, "admin": 1}

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key from LRFACE_API_KEYS: scope `read` (recognition, gallery reads) or `admin`.",
)
bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")


def scope_of(keys: dict[str, str], presented: str) -> str | None:
    found = None
    for key, scope in keys.items():  # every key is compared: timing says nothing about which matched
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = scope
    return found


def require(scope: str) -> Callable[..., None]:
    def check(
        request: Request,
        header_key: str | None = Security(api_key_header),
        bearer_key: HTTPAuthorizationCredentials | None = Security(bearer),
    ) -> None:
        keys: dict[str, str] = request.app.state.api_keys
        if not keys:
            return
        presented = header_key or (bearer_key.credentials if bearer_key is not None else None)
        if not presented:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send it in the X-API-Key header (or Authorization: Bearer)",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        granted = scope_of(keys, presented)
        if granted is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "ApiKey"})
        if SCOPES[granted] < SCOPES[scope]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this API key has scope '{granted}'; '{scope}' is needed")

    return check
