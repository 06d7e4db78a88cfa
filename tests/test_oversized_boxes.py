"""Memory per request is bounded by what the request holds: oversized face boxes, very wide images,
many images and non-finite numbers, against a real server whose peak memory is measured (VmHWM)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from service.load import face_png, peak_rss_mb
from tests.model_fixtures import tiny_service_env
from tests.server import ServerProcess, start_server

ADMIN = "box-admin"


def _png(width: int, height: int, seed: int = 0) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    """A fresh server (its peak memory is this module's alone) with a request budget of 3 MP."""
    env = tiny_service_env(tmp_path_factory.mktemp("boxes"), API_KEYS=f"{ADMIN}:admin", MAX_REQUEST_PIXELS="3000000")
    process = start_server(env)
    try:
        with httpx.Client(base_url=process.url, headers={"X-API-Key": ADMIN}, timeout=120) as client:
            yield process, client
    finally:
        process.stop()


@pytest.fixture()
def client(served: tuple[ServerProcess, httpx.Client]) -> httpx.Client:
    return served[1]


def test_concurrent_oversized_boxes_are_refused_with_bounded_memory(served: tuple[ServerProcess, httpx.Client]) -> None:
    """Once, a 30,000-px box on a 24-px image made one request allocate 6 GB."""
    server, client = served
    before = peak_rss_mb(server.pid)
    oversized = {"images": [{"data": face_png(1), "box": [0, 0, 30000, 30000]}]}
    # A box inside a 20,000 x 20 image: its square crop was once 20,000 x 20,000 pixels (1.2 GB).
    wide = {"images": [{"data": _png(20000, 20), "box": [0, 0, 20000, 20]}]}
    with ThreadPoolExecutor(8) as pool:
        refused = list(pool.map(lambda _: client.post("/embed", json=oversized), range(8)))
        served = list(pool.map(lambda _: client.post("/embed", json=wide), range(8)))
    for response in refused:
        assert response.status_code == 422 and "mostly outside the 24x24 image" in response.json()["detail"]
    for response in served:
        assert response.status_code == 200, response.text[:300]
        assert response.json()["embeddings"][0]["box_clipped"] is False
    peak = peak_rss_mb(server.pid)
    assert before is not None and peak is not None
    print(f"peak RSS {before:.0f} MiB before, {peak:.0f} MiB after 16 concurrent oversized-box requests")
    assert peak < 500


def test_a_box_reaching_a_little_past_the_edge_is_clipped_and_said(client: httpx.Client) -> None:
    body = {"images": [{"data": face_png(2), "box": [-2, 1, 20, 26]}]}
    face = client.post("/embed", json=body).json()["embeddings"][0]
    assert face["box"] == [0, 1, 20, 24] and face["box_clipped"] is True
    inside = client.post("/embed", json={"images": [{"data": face_png(2), "box": [2, 1, 20, 22]}]}).json()
    assert inside["embeddings"][0]["box_clipped"] is False


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/embed", '{"images": [{"data": "%s", "box": [0, 0, Infinity, 10]}]}', "finite"),
        ("/embed", '{"images": [{"data": "%s", "box": [NaN, 0, 10, 10]}]}', "finite"),
        ("/identify", '{"embedding": {"values": [NaN, 1.0], "model_version": "tiny-test:1"}}', "finite"),
        ("/identify", '{"image": {"data": "%s"}, "threshold": Infinity}', "finite"),
    ],
)
def test_non_finite_numbers_are_422(client: httpx.Client, path: str, body: str, words: str) -> None:
    content = body % face_png(3) if "%s" in body else body
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert words in json.dumps(response.json()["detail"])


def test_decoded_pixels_per_request_are_limited(client: httpx.Client) -> None:
    """Images of 1,000 x 1,000 (small PNGs): two fit the request's 3 MP of decoded pixels, four do not."""
    flat = Image.new("RGB", (1000, 1000), (90, 90, 90))
    buffer = io.BytesIO()
    flat.save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    assert client.post("/embed", json={"images": [{"data": image}] * 2}).status_code == 200
    response = client.post("/embed", json={"images": [{"data": image}] * 4})
    assert response.status_code == 413 and "LRFACE_MAX_REQUEST_PIXELS" in response.json()["detail"]
    enrol = client.post("/gallery/subjects/big/faces", json={"images": [{"data": image}] * 4})
    assert enrol.status_code == 413 and client.get("/gallery/subjects/big").status_code == 404
