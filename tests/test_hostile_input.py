"""Hostile input against the real server: each is refused quickly with a 4xx and a JSON ``detail``,
the server stays up, and its peak memory stays bounded (VmHWM, measured)."""

from __future__ import annotations

import base64
import socket
import struct
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest

from service.load import face_png, peak_rss_mb
from tests.model_fixtures import tiny_service_env
from tests.server import ServerProcess, start_server

ADMIN = "hostile-admin"
BODY_LIMIT = 20 * 1024 * 1024  # the default LRFACE_MAX_BODY_BYTES


def _png_bomb(side: int = 60_000) -> bytes:
    """A tiny PNG that declares side x side pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * side) * 64, 9)  # only the first rows: the header is the trap
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hostile")
    env = tiny_service_env(root, API_KEYS=f"{ADMIN}:admin")
    process = start_server(env)
    yield process
    process.stop()


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": ADMIN}, timeout=60) as c:
        yield c


def _refused(response: httpx.Response, codes: tuple[int, ...], words: str = "") -> None:
    assert response.status_code in codes, (response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert words in str(detail)


def test_decompression_bomb(client: httpx.Client) -> None:
    bomb = _png_bomb()
    assert len(bomb) < 200_000
    start = time.perf_counter()
    _refused(client.post("/embed", files=[("images", ("bomb.png", bomb))]), (413, 422), "exceeds")
    _refused(client.post("/embed", json={"images": [{"data": base64.b64encode(bomb).decode()}]}), (413, 422))
    medium = _png_bomb(8000)  # 64 M pixels: under Pillow's own guard, over LRFACE_MAX_IMAGE_PIXELS
    _refused(client.post("/embed", files=[("images", ("medium.png", medium))]), (422,), "exceeds the limit")
    elapsed = time.perf_counter() - start
    print(f"3 decompression bombs refused in {elapsed * 1000:.0f} ms")
    assert elapsed < 10  # refused from the header, never decoded


def test_one_gigabyte_body_is_cut_off(client: httpx.Client, server: ServerProcess) -> None:
    sent = 0

    def stream() -> Iterator[bytes]:
        nonlocal sent
        block = b"A" * (1 << 20)
        for _ in range(1024):  # 1 GiB, without a Content-Length
            sent += len(block)
            yield block

    # httpx sends the whole body before it reads the answer; the server stops buffering at the limit
    # and discards the rest (its peak memory is checked at the end of this module).
    start = time.perf_counter()
    response = client.post("/embed", content=stream(), headers={"content-type": "application/json"})
    _refused(response, (413,), "larger than")
    assert sent == 1 << 30
    print(f"1 GiB streamed body: 413 after {time.perf_counter() - start:.1f} s (the client sends it all)")
    # A declared 1 GiB body is refused from its header, before any of it is read.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /embed HTTP/1.1\r\nHost: x\r\nX-API-Key: {ADMIN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {1 << 30}\r\n\r\n{{".encode()
        )
        answer = ""
        while "larger than" not in answer and (chunk := sock.recv(4096)):  # headers and body may come apart
            answer += chunk.decode()
    assert answer.startswith("HTTP/1.1 413") and "larger than" in answer


def test_deeply_nested_json(client: httpx.Client) -> None:
    for body in (b"[" * 200_000 + b"]" * 200_000, b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        _refused(client.post("/embed", content=body, headers={"content-type": "application/json"}), (400, 413, 422))


def test_enormous_base64(client: httpx.Client) -> None:
    garbage = base64.b64encode(b"\xff" * (BODY_LIMIT // 4 * 3 - 4096)).decode()  # just under the body limit
    _refused(client.post("/embed", json={"images": [{"data": garbage}]}), (422,))
    _refused(client.post("/embed", json={"images": [{"data": "@@@" * 1000}]}), (400, 422), "base64")


@pytest.mark.parametrize(
    "subject",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "..",
        "a%00b",
        "%E2%80%AEevil",  # right-to-left override
        "%F0%9F%98%80",  # emoji
        "x" * 129,
        "a%20b",
        "a%0Ab",
        "-leading-dash",
    ],
)
def test_unicode_and_traversal_subject_ids(client: httpx.Client, subject: str) -> None:
    response = client.post(f"/gallery/subjects/{subject}/faces", json={"images": [{"data": face_png(1)}]})
    _refused(response, (404, 405, 422))
    _refused(client.get(f"/gallery/subjects/{subject}"), (404, 422))


def test_thousands_of_faces_in_one_request(client: httpx.Client) -> None:
    image = face_png(2, size=8)
    many = {"images": [{"data": image}] * 5000}
    start = time.perf_counter()
    _refused(client.post("/embed", json=many), (413, 422), "64")
    _refused(client.post("/gallery/subjects/many/faces", json=many), (413, 422), "64")
    files = [("images", (f"{i}.png", base64.b64decode(image))) for i in range(3000)]
    _refused(client.post("/embed", files=files), (413,), "Too many files")
    elapsed = time.perf_counter() - start
    print(f"3 requests of 3,000-5,000 faces refused in {elapsed * 1000:.0f} ms")
    assert elapsed < 30
    assert client.get("/gallery/subjects/many").status_code == 404  # nothing half-enrolled


def test_absurd_numbers(client: httpx.Client) -> None:
    _refused(client.get("/gallery/subjects", params={"offset": 10**22}), (422,))
    _refused(client.get("/gallery/subjects", params={"limit": 10**9}), (422,))
    probe = {"image": {"data": face_png(3)}, "top_k": 10**12}
    _refused(client.post("/identify", json=probe), (422,))
    _refused(client.delete("/gallery/subjects/a/faces/99999999999999999999999"), (404, 422))


def test_server_survives_with_bounded_memory(client: httpx.Client, server: ServerProcess) -> None:
    """Runs last in this module: after everything above, the server answers and its peak RSS is bounded."""
    assert client.get("/healthz").status_code == 200
    assert client.post("/embed", json={"images": [{"data": face_png(4)}]}).status_code == 200
    peak = peak_rss_mb(server.pid)
    assert peak is not None
    print(f"server peak RSS after the hostile inputs: {peak:.0f} MiB")
    assert peak < 1024  # a 1 GiB body never lands in memory
