"""The FastAPI application: lifespan opens the ONNX session and the gallery; no work at import."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lrface import __version__
from lrface.embedder import OnnxEmbedder
from lrface.settings import Settings, get_settings
from service.api import galleries, gallery_routes, model_card, operations, recognition
from service.api.openapi import request_body_schemas
from service.console import pages as console
from service.embedders import Embedders
from service.faces import FaceDecoder, FaceInputError
from service.gallery.gallery import ChangeFollower, Gallery
from service.gallery.store import UnknownGallery
from service.metrics import Metrics

log = logging.getLogger("lrface.service")


class BodyLimit:
    """Reject bodies over ``limit`` bytes with 413 before they are buffered (Content-Length or streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._reject(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.limit} bytes"}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class ObserveRequests:
    """Count requests and time them per route template (a pure ASGI middleware: request bodies pass
    through untouched, so the body limit's 413 is not wrapped into an exception group)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_code = 500

        async def recording_send(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status_code)).inc()
            self.metrics.latency.labels(path, scope["method"]).observe(time.perf_counter() - start)


class _TooLarge(HTTPException):
    """Raised from ``receive`` inside a route: FastAPI answers it as a 413 wherever it surfaces."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class GalleryLoader:
    """Builds the index in a thread so the process answers /healthz at once (an HNSW index over a
    million faces takes minutes); /readyz and the gallery routes answer 503 until it is done.

    A failed load (the database down, say) is retried with exponential back-off; after
    ``gallery_load_attempts`` failures the loader gives up and /healthz answers 503 too, so the
    orchestrator restarts the process instead of keeping a replica that will never be ready."""

    def __init__(self, app: FastAPI, gallery: Gallery, settings: Settings) -> None:
        self.app, self.gallery, self.settings = app, gallery, settings
        self.follower: ChangeFollower | None = None
        self.started = time.monotonic()
        self.error: str | None = None
        self.attempts = 0
        self.gave_up = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._load, name="lrface-gallery-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _load_with_retries(self) -> bool:
        """Load the gallery, retrying with exponential back-off; False when it gave up or was stopped."""
        wait = self.settings.gallery_load_backoff
        while not self._stop.is_set():
            self.attempts += 1
            try:
                self.gallery.load()
                return True
            except Exception as exc:  # noqa: BLE001 - reported by /readyz and /healthz, logged with its traceback
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("gallery failed to load (attempt %d of %d)", self.attempts,
                              self.settings.gallery_load_attempts)  # fmt: skip
                if self.attempts >= self.settings.gallery_load_attempts:
                    self.gave_up = True
                    return False
                self._stop.wait(wait)
                wait = min(wait * 2, 60.0)
        return False

    def _load(self) -> None:
        if not self._load_with_retries():
            return
        self.error = None
        if self.settings.sync_interval > 0:
            self.follower = ChangeFollower(self.gallery, self.settings.sync_interval)
            self.follower.start()  # picks up what other workers / replicas commit
        self.app.state.gallery = self.gallery
        log.info(
            "ready: gallery %s with %d faces (index %s on %s) after %.1f s",
            self.gallery.store.describe(),
            len(self.gallery),
            self.gallery.index.active_kind,
            self.gallery.index.device,
            time.monotonic() - self.started,
        )

    def status(self) -> str:
        if self.gave_up:
            return f"gallery failed to load {self.attempts} times, giving up: {self.error}"
        if self.error:
            return f"gallery failed to load (attempt {self.attempts}, retrying): {self.error}"
        return f"gallery index is being built ({time.monotonic() - self.started:.0f} s so far)"

    def stop(self) -> None:
        self._stop.set()
        if self.follower is not None:
            self.follower.stop()


def _configure_logging() -> None:
    """uvicorn sets up only its own loggers; give ours a handler so start-up choices are visible."""
    root = logging.getLogger("lrface")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    _configure_logging()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedders = Embedders.for_model(
            OnnxEmbedder(settings.model, settings.providers, settings.threads), settings.use_teacher,
            providers=settings.providers, threads=settings.threads,
        )  # fmt: skip
        embedder = embedders.student
        app.state.embedders, app.state.embedder = embedders, embedder
        metrics.model.info({"name": embedder.card.name, "version": embedder.model_version})
        # A gallery of another model version stops start-up here.
        gallery = embedders.open_gallery(settings, load=False)
        loader = GalleryLoader(app, gallery, settings)
        app.state.gallery_loader = loader
        log.info("serving %s on %s; loading gallery %s", embedders.describe(), embedder.providers,
                 gallery.store.describe())  # fmt: skip
        loader.start()
        try:
            yield
        finally:
            loader.stop()
            app.state.gallery = None
            gallery.close()

    app = FastAPI(
        title="lrface",
        version=__version__,
        description="Low-resolution face recognition: embed, identify and verify faces of 8-32 pixels, "
        "and manage the gallery of enrolled subjects.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.api_keys = settings.api_key_grants()
    app.state.metrics = metrics
    app.state.decoder = FaceDecoder.from_settings(settings)
    app.state.embedder = None
    app.state.embedders = None
    app.state.gallery = None
    app.state.gallery_loader = None
    app.include_router(recognition.router)
    app.include_router(galleries.router)
    gallery_routes.mount(app)  # /gallery/subjects and /galleries/{gallery}/subjects
    for module in (model_card, operations):
        app.include_router(module.router)
    console.install(app)  # the web console at / (pages public; their data comes through the keyed API)

    @app.exception_handler(FaceInputError)
    async def bad_face(request: Request, exc: FaceInputError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(UnknownGallery)
    async def unknown_gallery(request: Request, exc: UnknownGallery) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)  # deleted while the request ran

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in request_body_schemas().items():
                components.setdefault(name, schema)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(ObserveRequests, metrics=metrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
