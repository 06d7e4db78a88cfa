"""Every route of the OpenAPI document against missing, wrong, read-scope and admin keys: mutating
routes need the admin scope, read routes any valid key, probes none. A new route fails this test
until it is classified here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.load import face_png
from tests.model_fixtures import tiny_service_env
from tests.server import running_server

ADMIN, READER = "auth-admin", "auth-reader"
OPEN = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
READ = {
    ("POST", "/embed"),
    ("POST", "/identify"),
    ("POST", "/verify"),
    ("GET", "/gallery/subjects"),
    ("GET", "/gallery/subjects/{subject_id}"),
    ("GET", "/gallery/subjects/{subject_id}/faces/{face_id}/chip"),
    ("GET", "/model/card"),
    ("GET", "/galleries"),
    ("GET", "/galleries/{gallery}"),
    ("GET", "/galleries/{gallery}/subjects"),
    ("GET", "/galleries/{gallery}/subjects/{subject_id}"),
    ("GET", "/galleries/{gallery}/subjects/{subject_id}/faces/{face_id}/chip"),
}
ADMIN_ONLY = {
    ("POST", "/gallery/subjects/{subject_id}/faces"),
    ("DELETE", "/gallery/subjects/{subject_id}"),
    ("DELETE", "/gallery/subjects/{subject_id}/faces/{face_id}"),
    ("PUT", "/galleries/{gallery}"),
    ("DELETE", "/galleries/{gallery}"),
    ("POST", "/galleries/{gallery}/subjects/{subject_id}/faces"),
    ("DELETE", "/galleries/{gallery}/subjects/{subject_id}"),
    ("DELETE", "/galleries/{gallery}/subjects/{subject_id}/faces/{face_id}"),
}
BODIES = {
    "/embed": {"images": [{"data": face_png(1)}]},
    "/identify": {"image": {"data": face_png(1)}},
    "/verify": {"image_a": {"data": face_png(1)}, "image_b": {"data": face_png(2)}},
    "/gallery/subjects/{subject_id}/faces": {"images": [{"data": face_png(3)}]},
    "/galleries/{gallery}/subjects/{subject_id}/faces": {"images": [{"data": face_png(3)}]},
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("auth")
    env = tiny_service_env(root, API_KEYS=f"{ADMIN}:admin,{READER}:read")
    with running_server(env) as base:
        yield base


def _call(url: str, method: str, template: str, headers: dict[str, str]) -> httpx.Response:
    path = template.replace("{subject_id}", "auth-subject").replace("{face_id}", "1").replace("{gallery}", "default")
    body = BODIES.get(template)
    return httpx.request(method, url + path, json=body, headers=headers, timeout=30)


def test_every_route_is_classified(url: str) -> None:
    spec = httpx.get(url + "/openapi.json").json()
    operations = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert operations == OPEN | READ | ADMIN_ONLY


@pytest.mark.parametrize("method,template", sorted(READ | ADMIN_ONLY))
def test_missing_and_wrong_keys_are_refused(url: str, method: str, template: str) -> None:
    missing = _call(url, method, template, {})
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "ApiKey"
    for wrong in ({"X-API-Key": "not-a-key"}, {"Authorization": "Bearer not-a-key"}, {"X-API-Key": ADMIN + "x"}):
        response = _call(url, method, template, wrong)
        assert response.status_code == 401 and response.json()["detail"] == "unknown API key"


@pytest.mark.parametrize("method,template", sorted(ADMIN_ONLY))
def test_read_scope_cannot_change_the_gallery(url: str, method: str, template: str) -> None:
    response = _call(url, method, template, {"X-API-Key": READER})
    assert response.status_code == 403 and "'admin' is needed" in response.json()["detail"]
    assert httpx.get(url + "/gallery/subjects/auth-subject", headers={"X-API-Key": READER}).status_code == 404


@pytest.mark.parametrize("method,template", sorted(READ))
def test_read_scope_reads(url: str, method: str, template: str) -> None:
    response = _call(url, method, template, {"X-API-Key": READER})
    assert response.status_code in (200, 404)  # 404: the subject is not enrolled, but access was granted


def test_admin_key_does_everything_and_probes_need_none(url: str) -> None:
    for method, template in sorted(OPEN):
        assert _call(url, method, template, {}).status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert _call(url, "POST", "/gallery/subjects/{subject_id}/faces", admin).status_code == 201
    assert _call(url, "GET", "/gallery/subjects/{subject_id}", admin).status_code == 200
    assert _call(url, "DELETE", "/gallery/subjects/{subject_id}", admin).status_code == 200


def test_docs_show_how_to_authenticate(url: str) -> None:
    spec = httpx.get(url + "/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["APIKeyHeader"]["description"],
    }
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    for path, method in (("/embed", "post"), ("/gallery/subjects/{subject_id}/faces", "post")):
        assert {"APIKeyHeader": []} in spec["paths"][path][method]["security"]
    assert "security" not in spec["paths"]["/healthz"]["get"]  # probes need no key


def test_a_key_without_scope_is_read_only() -> None:
    from lrface.settings import Settings

    assert Settings(api_keys="plain,boss:admin").parsed_api_keys() == {"plain": "read", "boss": "admin"}
    with pytest.raises(ValueError, match="expected"):
        Settings(api_keys="k:root").parsed_api_keys()


@pytest.mark.parametrize(
    ("host", "keys", "anonymous", "refused"),
    [
        ("127.0.0.1", "", False, False),
        ("::1", "", False, False),
        ("localhost", "", False, False),
        ("0.0.0.0", "", False, True),
        ("10.1.2.3", "", False, True),
        ("0.0.0.0", "", True, False),
        ("0.0.0.0", "change-me-admin:admin", False, True),
        ("0.0.0.0", "s3cret:admin", False, False),
    ],
)
def test_serve_fails_closed(host: str, keys: str, anonymous: bool, refused: bool) -> None:
    import typer

    from lrface.settings import Settings
    from service.cli import check_exposure

    settings = Settings(api_keys=keys, allow_anonymous=anonymous)
    if refused:
        with pytest.raises(typer.Exit):
            check_exposure(settings, host)
    else:
        check_exposure(settings, host)


def test_gallery_checks_fail_closed_without_a_checked_key() -> None:
    """A gallery check on a request whose key was never checked (a route that forgot ``require``) is
    refused while keys are configured, and open only where the service runs without keys."""
    from types import SimpleNamespace

    from fastapi import HTTPException

    from lrface.settings import KeyGrant
    from service.api.auth import check_gallery, may_use

    def request(keys: dict[str, KeyGrant], grant: KeyGrant | None = None) -> Any:
        state = SimpleNamespace(api_grant=grant) if grant is not None else SimpleNamespace()
        return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(api_keys=keys)), state=state)

    keys = {"k": KeyGrant("read", frozenset({"lobby"}))}
    with pytest.raises(HTTPException) as refused:
        check_gallery(request(keys), "staff")
    assert refused.value.status_code == 403 and "staff" in str(refused.value.detail)
    assert may_use(request({}), "staff")  # no keys: the service is open
    assert may_use(request(keys, keys["k"]), "lobby") and not may_use(request(keys, keys["k"]), "staff")
