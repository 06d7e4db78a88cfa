"""The console's pages and the routes it reads (stored chips, the model card) over real HTTP; the
pages in a real browser are in ``test_console_browser.py``."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.model_fixtures import write_tiny_model
from tests.server import running_server

ADMIN, READER = "console-admin", "console-reader"


def _png(seed: int, size: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = write_tiny_model(tmp_path_factory.mktemp("model"))
    env = {
        "LRFACE_MODEL": str(model),
        "LRFACE_GALLERY_DIR": str(tmp_path_factory.mktemp("gallery")),
        "LRFACE_API_KEYS": f"{ADMIN}:admin,{READER}:read",
    }
    with running_server(env) as server_url:
        yield server_url


def test_pages_are_served_without_a_key_and_stay_out_of_the_api_schema(url: str) -> None:
    for path, words in (("/", "Enrol a person"), ("/console/identify", "Who is in this photo?"),
                        ("/console/model", "Decision thresholds")):  # fmt: skip
        page = httpx.get(url + path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert words in page.text and "/console/static/console.js" in page.text
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self': no inline script
        assert "default-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(url + "/console/static/identify.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(url + "/console/static/nope.js").status_code == 404
    spec = httpx.get(url + "/openapi.json").json()
    assert "/" not in spec["paths"] and not any(p.startswith("/console") for p in spec["paths"])
    assert "/gallery/subjects/{subject_id}/faces/{face_id}/chip" in spec["paths"] and "/model/card" in spec["paths"]
    assert httpx.get(url + "/docs").status_code == 200


def test_stored_chips_are_served_to_read_keys(url: str) -> None:
    admin = {"X-API-Key": ADMIN}
    enrolled = httpx.post(url + "/gallery/subjects/chipper/faces", headers=admin,
                          files={"images": ("a.png", _png(1, 100))}, data={"detect": "false"})  # fmt: skip
    assert enrolled.status_code == 201, enrolled.text
    face_id = enrolled.json()["faces"][0]["face_id"]
    chip_url = f"{url}/gallery/subjects/chipper/faces/{face_id}/chip"
    reader = {"X-API-Key": READER}
    canonical = httpx.get(chip_url, headers=reader)
    assert canonical.status_code == 200 and canonical.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(canonical.content)).size == (64, 64)  # a 100-px face: the 64-px canonical chip
    hr = httpx.get(chip_url, params={"kind": "hr"}, headers=reader)
    assert hr.status_code == 200 and Image.open(io.BytesIO(hr.content)).size == (150, 150)

    assert httpx.get(chip_url).status_code == 401
    assert httpx.get(chip_url, headers={"X-API-Key": "wrong"}).status_code == 401
    other = httpx.get(f"{url}/gallery/subjects/someone-else/faces/{face_id}/chip", headers=reader)
    assert other.status_code == 404 and "does not exist" in other.json()["detail"]
    assert httpx.get(f"{url}/gallery/subjects/chipper/faces/999999/chip", headers=reader).status_code == 404
    bad_kind = httpx.get(chip_url, params={"kind": "huge"}, headers=reader)
    assert bad_kind.status_code == 422
    bad_id = httpx.get(f"{url}/gallery/subjects/bad$id/faces/{face_id}/chip", headers=reader)
    assert bad_id.status_code == 422 and "subject_id must be" in bad_id.json()["detail"]


def test_the_model_card_is_served_to_read_keys(url: str) -> None:
    assert httpx.get(url + "/model/card").status_code == 401
    card = httpx.get(url + "/model/card", headers={"X-API-Key": READER}).json()
    assert card["name"] == "tiny-test" and card["version"] == "1" and card["threshold"] == 0.5
    assert card["embedding_size"] == 32 and card["routing"] is None


def test_page_scripts_never_write_html(url: str) -> None:
    """The console shows names and API answers as text, never as markup: a subject id or an error
    detail cannot inject script (the pages' CSP forbids inline script as well)."""
    for name in ("console.js", "gallery.js", "identify.js", "model.js"):
        source = httpx.get(f"{url}/console/static/{name}").text
        assert "innerHTML" not in source and "outerHTML" not in source and "document.write" not in source, name
