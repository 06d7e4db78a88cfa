"""Two service processes on one PostgreSQL gallery (as replicas behind one port): an enrolment made
through one is identified by the other, and a replica killed mid-stream catches up on restart."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.model_fixtures import write_tiny_model
from tests.server import ServerProcess, start_server

ADMIN = "admin-secret"


def _png(seed: int, size: int = 24) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _enroll(client: httpx.Client, subject: str, seed: int) -> None:
    r = client.post(f"/gallery/subjects/{subject}/faces", json={"images": [{"data": _png(seed)}]})
    assert r.status_code == 201, r.text


def _top(client: httpx.Client, seed: int) -> str | None:
    r = client.post("/identify", json={"image": {"data": _png(seed)}, "top_k": 1})
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    return matches[0]["subject_id"] if matches and matches[0]["score"] > 0.999 else None


def _wait_for(client: httpx.Client, seed: int, expected: str | None, timeout: float = 10) -> float:
    start = time.monotonic()
    while _top(client, seed) != expected:
        assert time.monotonic() - start < timeout, f"replica did not converge to {expected!r}"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture()
def env(tmp_path: Path, postgres_url: str) -> dict[str, str]:
    return {
        "LRFACE_MODEL": str(write_tiny_model(tmp_path / "model")),
        "LRFACE_DATABASE_URL": postgres_url,
        "LRFACE_GALLERY_DIR": str(tmp_path / "unused-sqlite"),
        "LRFACE_API_KEYS": f"{ADMIN}:admin",
        "LRFACE_SYNC_INTERVAL": "0.2",
    }


@pytest.fixture()
def replicas(env: dict[str, str]) -> Iterator[list[ServerProcess]]:
    servers = [start_server(env), start_server(env)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_enrolment_through_one_replica_is_found_by_the_other(
    replicas: list[ServerProcess], env: dict[str, str], tmp_path: Path
) -> None:
    a, b = (httpx.Client(base_url=s.url, headers={"X-API-Key": ADMIN}, timeout=30) for s in replicas)
    ready = b.get("/readyz").json()
    assert ready["gallery_store"].startswith("postgresql://lrface@127.0.0.1")
    assert (ready["index_kind"], ready["index_device"]) == ("pgvector-hnsw", "postgresql")  # searched in the database
    assert not (tmp_path / "unused-sqlite").exists()  # the SQLite default was not touched

    # Neither replica holds a copy: a write through one is found by the other at once, with no sync lag.
    _enroll(a, "alice", 1)
    assert _top(b, 1) == "alice"
    _enroll(b, "bob", 2)
    assert _top(a, 2) == "bob"
    assert b.delete("/gallery/subjects/alice").status_code == 200
    assert _top(a, 1) is None

    # Kill B mid-stream (SIGKILL: no shutdown), keep writing through A, restart B: it catches up.
    replicas[1].kill()
    for n in range(10, 20):
        _enroll(a, f"s{n}", n)
    assert a.delete("/gallery/subjects/bob").status_code == 200
    replicas[1] = start_server(env)
    b = httpx.Client(base_url=replicas[1].url, headers={"X-API-Key": ADMIN}, timeout=30)
    assert all(_top(b, n) == f"s{n}" for n in range(10, 20))
    assert _top(b, 2) is None and _top(b, 1) is None
    ready_a, ready_b = a.get("/readyz").json(), b.get("/readyz").json()
    assert ready_b["gallery_faces"] == 10
    _wait_for(a, 19, "s19")
    assert ready_a["gallery_faces"] == 10 and b.get("/readyz").json()["gallery_seq"] >= ready_a["gallery_seq"]
