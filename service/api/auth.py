"""API keys with two scopes: ``read`` (embed, identify, verify, gallery reads) and ``admin``
(also gallery writes). Keys are compared in constant time; no keys configured means no auth."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request, status

SCOPES = {"read": 0, "admin": 1}


def _presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def scope_of(keys: dict[str, str], presented: str) -> str | None:
    found = None
    for key, scope in keys.items():  # every key is compared: timing says nothing about which matched
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = scope
    return found


def require(scope: str) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        keys: dict[str, str] = request.app.state.api_keys
        if not keys:
            return
        presented = _presented_key(request)
        if presented is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send it in the X-API-Key header",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        granted = scope_of(keys, presented)
        if granted is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "ApiKey"})
        if SCOPES[granted] < SCOPES[scope]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this API key has scope '{granted}'; '{scope}' is needed")

    return check
