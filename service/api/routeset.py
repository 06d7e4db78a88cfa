"""Routes declared once and served under several prefixes: the subject routes answer under
``/gallery/subjects`` (the default gallery) and ``/galleries/{gallery}/subjects`` with the same
bodies. Each prefix gets a router of its own whose routes carry their full path, so route templates
(the metrics' ``route`` label, /docs) name the mount a request came through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


class RouteSet:
    def __init__(self) -> None:
        self._routes: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []

    def api_route(self, path: str, methods: list[str], **options: Any) -> Callable[[Endpoint], Endpoint]:
        """Record ``endpoint`` as ``APIRouter.add_api_route(path, endpoint, methods=..., **options)``."""

        def record(endpoint: Endpoint) -> Endpoint:
            self._routes.append((path, endpoint, {"methods": methods, **options}))
            return endpoint

        return record

    def get(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, ["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, ["POST"], **options)

    def delete(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, ["DELETE"], **options)

    def router(self, prefix: str, **options: Any) -> APIRouter:
        """A router serving every recorded route under ``prefix`` (``options`` as for ``APIRouter``)."""
        router = APIRouter(prefix=prefix, **options)
        for path, endpoint, route_options in self._routes:
            router.add_api_route(path, endpoint, **route_options)
        return router


subject_routes = RouteSet()  # filled by service.api.gallery_routes and service.api.chips
