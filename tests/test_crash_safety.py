"""Crash safety: enrol through the API in a loop, SIGKILL the server at random moments, restart it,
and check that every acknowledged enrolment is there, nothing unacknowledged is half there, and the
FAISS index agrees with the store: while the server runs (each round, before the kill) and after the
last restart. Both stores. ``LRFACE_CRASH_ROUNDS`` sets the number of kills."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.load import face_png
from tests.model_fixtures import write_tiny_model
from tests.server import ServerProcess, start_server

ROUNDS = int(os.environ.get("LRFACE_CRASH_ROUNDS", "3"))
FACES_PER_REQUEST = 3


def _enrol_until_refused(
    url: str, seed: list[int], acked: dict[str, list[int]], attempted: list[str], pause: threading.Event | None = None
) -> None:
    """Enrol new subjects (several faces per request) until the server stops answering or ``pause``."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for n in range(100_000):
            if pause is not None and pause.is_set():
                return
            subject = "r" + "-".join(str(v) for v in [*seed, n])
            body = {"images": [{"data": face_png([*seed, n, k])} for k in range(FACES_PER_REQUEST)]}
            attempted.append(subject)
            try:
                response = client.post(f"/gallery/subjects/{subject}/faces", json=body)
            except httpx.HTTPError:
                return  # killed mid-request: this one is unacknowledged
            assert response.status_code == 201, response.text
            acked[subject] = [f["face_id"] for f in response.json()["faces"]]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_sigkill_loses_no_acknowledged_enrolment(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {"LRFACE_MODEL": str(write_tiny_model(tmp_path / "model")), "LRFACE_GALLERY_DIR": str(tmp_path / "gallery")}
    if store == "postgresql":
        env["LRFACE_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    rng = random.Random(1234)
    acked: dict[str, list[int]] = {}
    attempted: list[str] = []
    for round_no in range(ROUNDS):
        server = start_server(env)
        pause = threading.Event()
        first = threading.Thread(target=_enrol_until_refused, args=(server.url, [round_no, 0], acked, attempted, pause))
        first.start()
        time.sleep(rng.uniform(0.2, 0.6))
        pause.set()
        first.join(timeout=30)
        _check_index_matches_store(server.url)  # while it runs, not only after a restart rebuilt the index
        writer = threading.Thread(target=_enrol_until_refused, args=(server.url, [round_no, 1], acked, attempted))
        writer.start()
        time.sleep(rng.uniform(0.3, 1.5))
        server.kill()
        writer.join(timeout=30)
        assert not writer.is_alive()
    server = start_server(env)
    try:
        _check_gallery(server, acked, attempted)
    finally:
        server.stop()
    print(f"{store}: {ROUNDS} kills, {len(acked)} acknowledged enrolments of {len(attempted)} attempted")


def _check_index_matches_store(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        stored, offset = 0, 0
        while True:
            page = client.get("/gallery/subjects", params={"offset": offset, "limit": 1000}).json()
            stored += sum(item["face_count"] for item in page["items"])
            offset += len(page["items"])
            if offset >= page["total"]:
                break
        assert client.get("/readyz").json()["gallery_faces"] == stored  # index == store


def _check_gallery(server: ServerProcess, acked: dict[str, list[int]], attempted: list[str]) -> None:
    assert len(acked) >= ROUNDS  # each round got work done before the kill
    with httpx.Client(base_url=server.url, timeout=30) as client:
        stored_faces = 0
        for subject in attempted:
            response = client.get(f"/gallery/subjects/{subject}")
            if subject in acked:
                assert response.status_code == 200, f"acknowledged {subject} lost"
                assert [f["face_id"] for f in response.json()["faces"]] == acked[subject]
            if response.status_code == 200:
                assert len(response.json()["faces"]) == FACES_PER_REQUEST, f"{subject} half written"
                stored_faces += FACES_PER_REQUEST
            else:
                assert response.status_code == 404
        assert client.get("/readyz").json()["gallery_faces"] == stored_faces  # index == store
        for subject in list(acked)[:: max(1, len(acked) // 25)]:
            seed = [int(x) for x in subject[1:].split("-")]
            probe = {"image": {"data": face_png([*seed, 0])}, "top_k": 1}
            match = client.post("/identify", json=probe).json()["matches"][0]
            assert match["subject_id"] == subject and match["score"] > 0.999
