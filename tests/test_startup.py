"""Start-up: the process answers /healthz while a large gallery's index is still being built; /readyz
and the gallery routes answer 503 (with Retry-After) until it is, embedding works meanwhile; a gallery
of another model version stops start-up with a clear error."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lrface.settings import Settings
from service.app import create_app
from service.gallery.gallery import Gallery, GalleryVersionMismatch
from service.gallery.store import GalleryStore, NewFace
from service.load import face_png
from tests.model_fixtures import write_tiny_model


def test_gallery_routes_wait_for_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_load = Gallery.load

    def slow_load(self: Gallery) -> None:
        release.wait(30)
        real_load(self)

    monkeypatch.setattr(Gallery, "load", slow_load)
    settings = Settings(model=write_tiny_model(tmp_path / "model"), gallery_dir=tmp_path / "gallery", api_keys="")
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "being built" in ready.json()["detail"]
        assert ready.headers["retry-after"] == "5"
        probe = {"image": {"data": face_png(1)}}
        assert client.post("/identify", json=probe).status_code == 503
        assert client.get("/gallery/subjects").status_code == 503
        assert client.post("/embed", json={"images": [{"data": face_png(1)}]}).status_code == 200
        release.set()
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.get("/readyz").json()["gallery_faces"] == 0
        assert client.post("/gallery/subjects/a/faces", json={"images": [probe["image"]]}).status_code == 201
        assert client.post("/identify", json=probe).json()["matches"][0]["subject_id"] == "a"


def test_other_model_version_stops_start_up(tmp_path: Path) -> None:
    store = GalleryStore.sqlite(tmp_path / "gallery")
    store.add_faces("a", [NewFace("h", np.ones(32, np.float32) / np.sqrt(32))], "old-model:0")
    store.close()
    settings = Settings(model=write_tiny_model(tmp_path / "model"), gallery_dir=tmp_path / "gallery")
    with pytest.raises(GalleryVersionMismatch, match="reembed"), TestClient(create_app(settings)):
        pass


def _retrying(tmp_path: Path, attempts: int) -> Settings:
    model = write_tiny_model(tmp_path / "model")
    return Settings(model=model, gallery_dir=tmp_path / "g", gallery_load_attempts=attempts, gallery_load_backoff=0.02)


def _wait_for(condition: object, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():  # type: ignore[operator]
            return
        threading.Event().wait(0.02)


def test_a_failed_gallery_load_is_retried_with_back_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_load, calls = Gallery.load, []

    def flaky_load(self: Gallery) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("database unreachable")
        real_load(self)

    monkeypatch.setattr(Gallery, "load", flaky_load)
    with TestClient(create_app(_retrying(tmp_path, attempts=5))) as client:
        _wait_for(lambda: client.get("/readyz").status_code == 200)
        assert client.get("/readyz").status_code == 200 and len(calls) == 3
        assert client.get("/healthz").status_code == 200


def test_a_gallery_that_never_loads_fails_liveness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_load(self: Gallery) -> None:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(Gallery, "load", broken_load)
    with TestClient(create_app(_retrying(tmp_path, attempts=3))) as client:
        _wait_for(lambda: client.get("/healthz").status_code == 503)
        health = client.get("/healthz")
        assert health.status_code == 503 and "failed to load 3 times" in health.json()["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "database unreachable" in ready.json()["detail"]
