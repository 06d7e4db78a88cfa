"""The console's pages (``/``, ``/console/identify``, ``/console/model``) and its static files.

The pages themselves are public and hold no data: everything they show comes from the keyed JSON
API, called by the browser with the API key the user entered (kept in ``sessionStorage``). They
are left out of the OpenAPI schema, so ``/docs`` lists the API alone."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from lrface import __version__

HERE = Path(__file__).resolve().parent
STATIC_PATH = "/console/static"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)

# Scripts, styles and images from the service itself only: a subject name or an API answer can never
# run as script. The chips and the model's input arrive as blob: and data: URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _page(request: Request, template: str, title: str, active: str) -> HTMLResponse:
    context = {"title": title, "active": active, "version": __version__, "static": STATIC_PATH}
    response = templates.TemplateResponse(request, template, context)
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("/", response_class=HTMLResponse)
def gallery_page(request: Request) -> HTMLResponse:
    return _page(request, "gallery.html", "Gallery", "gallery")


@router.get("/console/identify", response_class=HTMLResponse)
def identify_page(request: Request) -> HTMLResponse:
    return _page(request, "identify.html", "Identify", "identify")


@router.get("/console/model", response_class=HTMLResponse)
def model_page(request: Request) -> HTMLResponse:
    return _page(request, "model.html", "Model card", "model")


def install(app: FastAPI) -> None:
    """Add the console's pages and static files to ``app``."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="console-static")
