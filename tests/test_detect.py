"""detect=true: dlib's detector and 5-point alignment (the training aligner) on a real photo."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from lrface.alignment import aligner_available
from tests.faces import lfw_faces
from tests.model_fixtures import write_tiny_model
from tests.server import running_server

pytestmark = pytest.mark.skipif(not aligner_available(), reason="dlib aligner not installed")


def test_detect_finds_the_face_box(tmp_path: Path) -> None:
    photo = lfw_faces("Colin_Powell", 1)[0].read_bytes()
    env = {"LRFACE_MODEL": str(write_tiny_model(tmp_path / "m")), "LRFACE_GALLERY_DIR": str(tmp_path / "g")}
    with running_server(env) as url:
        body = {"images": [{"data": base64.b64encode(photo).decode()}], "detect": True}
        response = httpx.post(url + "/embed", json=body, timeout=30).json()
        left, top, right, bottom = response["embeddings"][0]["box"]
        assert 40 < left < right < 210 and 40 < top < bottom < 210  # the face sits mid-image in LFW
        blank = httpx.post(url + "/embed", files={"images": ("b.png", _blank_png())}, data={"detect": "true"})
        assert blank.status_code == 422 and "no face found" in blank.json()["detail"]


def _blank_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (120, 120), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()
