"""API keys with two scopes: ``read`` (embed, identify, verify, gallery reads) and ``admin`` (also
gallery writes), sent as ``X-API-Key`` or ``Authorization: Bearer``. Declared through
``fastapi.security``, so /docs shows both schemes and its Authorize button. Keys are compared in
constant time. With no keys configured every route is open; ``lrface serve`` allows that on a
loopback address only, unless LRFACE_ALLOW_ANONYMOUS=true.

A key may be limited to some galleries (``key:read@lobby|staff``): :func:`check_gallery` refuses it
(403) any other gallery, and only an admin key limited to none creates or deletes galleries."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from lrface.settings import KeyGrant

SCOPES = {"read": 0, "admin": 1}

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key from LRFACE_API_KEYS: scope `read` (recognition, gallery reads) or `admin`, "
    "optionally limited to some galleries (`key:read@lobby|staff`).",
)
bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")


def scope_of(keys: dict[str, KeyGrant], presented: str) -> KeyGrant | None:
    found = None
    for key, grant in keys.items():  # every key is compared: timing says nothing about which matched
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = grant
    return found


def grant_of(request: Request) -> KeyGrant | None:
    """The presented key's grant (set by :func:`require`); None when the service runs without keys."""
    grant: KeyGrant | None = getattr(request.state, "api_grant", None)
    return grant


def may_use(request: Request, gallery: str) -> bool:
    grant = grant_of(request)
    if grant is None:  # no key checked: open only where the service runs without keys (fail closed)
        return not request.app.state.api_keys
    return grant.galleries is None or gallery in grant.galleries


def check_gallery(request: Request, gallery: str) -> None:
    """403 unless the request's key may use ``gallery`` (checked before whether it exists: a limited key
    learns nothing of galleries it may not use)."""
    if not may_use(request, gallery):
        grant = grant_of(request)
        if grant is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"no API key was checked for gallery {gallery!r}")
        allowed = ", ".join(sorted(grant.galleries or ()))
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this API key may use the galleries {allowed} only, not {gallery!r}"
        )


def visible(request: Request, names: Iterable[str]) -> list[str]:
    return [name for name in names if may_use(request, name)]


def require(scope: str, every_gallery: bool = False) -> Callable[..., None]:
    """The dependency that checks the key and its scope (``every_gallery``: a key limited to some
    galleries is refused, as for creating or deleting galleries)."""

    def check(
        request: Request,
        header_key: str | None = Security(api_key_header),
        bearer_key: HTTPAuthorizationCredentials | None = Security(bearer),
    ) -> None:
        keys: dict[str, KeyGrant] = request.app.state.api_keys
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
        if SCOPES[granted.scope] < SCOPES[scope]:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this API key has scope '{granted.scope}'; '{scope}' is needed"
            )
        if every_gallery and granted.galleries is not None:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "this API key is limited to some galleries; creating and deleting galleries needs an admin key "
                "limited to none",
            )
        request.state.api_grant = granted

    return check
