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
