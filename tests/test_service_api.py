"""Every route through a real HTTP client against a real server process."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.faces import lfw_faces
from tests.model_fixtures import write_tiny_model
from tests.server import running_server

ADMIN, READER = "admin-secret", "reader-secret"


def _png(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    gallery = tmp_path_factory.mktemp("gallery")
    env = {
        "LRFACE_MODEL": str(model_dir),
        "LRFACE_GALLERY_DIR": str(gallery),
        "LRFACE_API_KEYS": f"{ADMIN}:admin,{READER}:read",
        "LRFACE_MAX_BODY_BYTES": "2000000",
    }
    with running_server(env) as url:
        yield url, gallery


@pytest.fixture()
def admin(server: tuple[str, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], headers={"X-API-Key": ADMIN}, timeout=30) as client:
        yield client


@pytest.fixture()
def reader(server: tuple[str, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], headers={"X-API-Key": READER}, timeout=30) as client:
        yield client


def test_health_ready_and_docs(admin: httpx.Client) -> None:
    assert admin.get("/healthz").json() == {"status": "ok"}
    ready = admin.get("/readyz").json()
    assert ready["ready"] and ready["model_version"] == "tiny-test:1" and ready["embedding_size"] == 32
    assert ready["providers"] == ["CPUExecutionProvider"] and ready["index_kind"] == "flat"
    spec = admin.get("/openapi.json").json()
    for path in ("/embed", "/identify", "/verify", "/gallery/subjects/{subject_id}/faces"):
        assert path in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/embed"]["post"]["requestBody"]["content"]


def test_embed_multipart_and_json_agree(reader: httpx.Client) -> None:
    data = _png(1)
    multipart = reader.post("/embed", files=[("images", ("a.png", data)), ("images", ("b.png", _png(2)))])
    assert multipart.status_code == 200, multipart.text
    body = multipart.json()
    assert len(body["embeddings"]) == 2 and body["model_version"] == "tiny-test:1"
    vec = np.asarray(body["embeddings"][0]["embedding"])
    assert vec.shape == (32,) and abs(np.linalg.norm(vec) - 1) < 1e-5
    as_json = reader.post("/embed", json={"images": [{"data": _b64(data)}]}).json()
    assert np.allclose(as_json["embeddings"][0]["embedding"], vec, atol=1e-6)
    boxed = reader.post("/embed", json={"images": [{"data": _b64(data), "box": [2, 2, 20, 22]}]}).json()
    assert boxed["embeddings"][0]["box"] == [2, 2, 20, 22]
    assert not np.allclose(boxed["embeddings"][0]["embedding"], vec)


def test_enroll_identify_verify_delete(admin: httpx.Client, reader: httpx.Client) -> None:
    alice, bob = _png(10), _png(20)
    r = admin.post("/gallery/subjects/alice/faces", files=[("images", ("a.png", alice))])
    assert r.status_code == 201, r.text
    face_id = r.json()["faces"][0]["face_id"]
    again = admin.post("/gallery/subjects/alice/faces", json={"images": [{"data": _b64(alice)}]}).json()
    assert again["faces"][0] == {
        "face_id": face_id,
        "content_hash": r.json()["faces"][0]["content_hash"],
        "created": False,
        "input": "chip",  # a 24-px image is a face chip under detect=auto: taken whole
        "box": None,
        "face_px": 24.0,
        "detection_score": None,
    }
    assert admin.post("/gallery/subjects/bob/faces", json={"images": [{"data": _b64(bob)}]}).status_code == 201

    found = reader.post("/identify", files={"image": ("q.png", alice)}, data={"top_k": "2"}).json()
    assert found["matches"][0]["subject_id"] == "alice" and found["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert found["decision"] == "alice" and len(found["matches"]) == 2
    strict = reader.post("/identify", json={"image": {"data": _b64(bob)}, "threshold": 1.0}).json()
    assert strict["matches"][0]["subject_id"] == "bob"

    embedding = reader.post("/embed", json={"images": [{"data": _b64(bob)}]}).json()["embeddings"][0]["embedding"]
    edge = reader.post("/identify", json={"embedding": {"values": embedding, "model_version": "tiny-test:1"}}).json()
    assert edge["decision"] == "bob"

    same = reader.post("/verify", json={"image_a": {"data": _b64(alice)}, "image_b": {"data": _b64(alice)}}).json()
    assert same["same_person"] and same["score"] == pytest.approx(1.0, abs=1e-5)
    vs_subject = reader.post("/verify", files={"image_a": ("q.png", alice)}, data={"subject_id": "alice"}).json()
    assert vs_subject["faces_compared"] == 1 and vs_subject["mean_score"] == pytest.approx(1.0, abs=1e-5)

    page = reader.get("/gallery/subjects", params={"limit": 1}).json()
    assert page["total"] >= 2 and len(page["items"]) == 1
    subject = reader.get("/gallery/subjects/alice").json()
    assert [f["face_id"] for f in subject["faces"]] == [face_id]

    assert admin.delete(f"/gallery/subjects/alice/faces/{face_id}").status_code == 200
    assert admin.delete(f"/gallery/subjects/alice/faces/{face_id}").status_code == 404
    assert admin.delete("/gallery/subjects/bob").json()["deleted_faces"] == 1
    after = reader.post("/identify", json={"image": {"data": _b64(bob)}}).json()
    assert all(m["subject_id"] != "bob" for m in after["matches"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code", "words"),
    [
        ("post", "/embed", {"files": {"images": ("x.png", b"not an image")}}, 422, "not a recognised image"),
        ("post", "/embed", {"files": {"images": ("x.png", b"")}}, 422, "empty file"),
        ("post", "/embed", {"json": {"images": [{"data": "@@@"}]}}, 400, "not valid base64"),
        ("post", "/embed", {"json": {"images": []}}, 422, "images"),
        (
            "post",
            "/embed",
            {"files": [("images", ("x.png", _png(9))), ("detect", ("d.txt", b"true"))]},
            422,
            "detect must be a form field, not a file",
        ),
        ("post", "/embed", {"content": b"{", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        (
            "post",
            "/embed",
            {"content": b"x", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported content type",
        ),
        (
            "post",
            "/embed",
            {"content": b"[" * 100000 + b"]" * 100000, "headers": {"content-type": "application/json"}},
            400,
            "nested too deeply",
        ),
        (
            "post",
            "/embed",
            {"json": {"images": [{"data": _b64(_png(9)), "box": [5, 5, 1, 1]}]}},
            422,
            "box [5.0, 5.0, 1.0, 1.0] is empty",
        ),
        ("post", "/identify", {"json": {"top_k": 0, "image": {"data": "QQ=="}}}, 422, "top_k"),
        ("post", "/verify", {"json": {"image_a": {"data": "QQ=="}, "subject": "x"}}, 422, "unknown field 'subject'"),
        ("post", "/embed", {"files": {"images": ("x.png", _png(9))}, "data": {"detection": "1"}}, 422, "detection"),
        ("post", "/embed?detect=false", {"json": {"images": [{"data": _b64(_png(9))}]}}, 422, "query parameter"),
        ("delete", "/gallery/subjects/x?force=1", {}, 422, "unknown query parameter(s) force"),
        ("post", "/identify", {"json": {"images": [{"data": "QQ=="}] * 2}}, 422, "fuse=true"),
        ("post", "/identify", {"json": {"top_k": 3}}, 422, "give a query image or embedding"),
        (
            "post",
            "/identify",
            {"json": {"embedding": {"values": [1.0] * 31, "model_version": "tiny-test:1"}}},
            422,
            "has 31 values",
        ),
        (
            "post",
            "/identify",
            {"json": {"embedding": {"values": [1.0] * 32, "model_version": "other:9"}}},
            409,
            "comes from model",
        ),
        (
            "post",
            "/identify",
            {"json": {"embedding": {"values": [0.0] * 32, "model_version": "tiny-test:1"}}},
            422,
            "finite and non-zero",
        ),
        ("post", "/verify", {"json": {"subject_id": "nobody-here", "image_a": {"data": ""}}}, 422, "empty file"),
        ("get", "/gallery/subjects/nobody", {}, 404, "not enrolled"),
        ("get", "/gallery/subjects/..%2F..%2Fetc", {}, 404, "Not Found"),
        ("get", "/gallery/subjects/bad$id", {}, 422, "subject_id must be"),
        ("delete", "/gallery/subjects/.hidden", {}, 422, "subject_id must be"),
        (
            "post",
            "/gallery/subjects/%C3%A9l%C3%A8ve/faces",
            {"json": {"images": [{"data": "QQ=="}]}},
            422,
            "subject_id must be",
        ),
        (
            "post",
            "/embed",
            {"content": b"x" * 2_100_000, "headers": {"content-type": "application/json"}},
            413,
            "larger than",
        ),
    ],
)
def test_bad_input_gets_4xx_with_detail(
    admin: httpx.Client, method: str, path: str, kwargs: dict, code: int, words: str
) -> None:
    response = admin.request(method.upper(), path, **kwargs)
    assert response.status_code == code, response.text
    assert words in response.json()["detail"]


def test_box_outside_image_is_rejected(reader: httpx.Client) -> None:
    r = reader.post("/embed", json={"images": [{"data": _b64(_png(3)), "box": [100, 100, 200, 200]}]})
    assert r.status_code == 422 and "outside" in r.json()["detail"]
    r = reader.post("/embed", files={"images": ("x.png", _png(3))}, data={"box": "1,2,inf,9"})
    assert r.status_code == 422 and "finite" in r.json()["detail"]


def test_the_content_hash_covers_the_box(admin: httpx.Client) -> None:
    """Two faces of one photo are two enrolments; the same face re-sent is one."""
    photo = _b64(_png(11, size=48))
    left = {"images": [{"data": photo, "box": [0, 0, 24, 24]}]}
    right = {"images": [{"data": photo, "box": [24, 24, 48, 48]}]}
    first = admin.post("/gallery/subjects/pair/faces", json=left).json()["faces"][0]
    second = admin.post("/gallery/subjects/pair/faces", json=right).json()["faces"][0]
    again = admin.post("/gallery/subjects/pair/faces", json=left).json()["faces"][0]
    whole = admin.post("/gallery/subjects/pair/faces", json={"images": [{"data": photo}]}).json()["faces"][0]
    assert first["created"] and second["created"] and whole["created"] and not again["created"]
    assert len({first["content_hash"], second["content_hash"], whole["content_hash"]}) == 3
    assert again["face_id"] == first["face_id"]
    assert len(admin.get("/gallery/subjects/pair").json()["faces"]) == 3


def test_verify_against_unknown_subject(reader: httpx.Client) -> None:
    r = reader.post("/verify", json={"image_a": {"data": _b64(_png(4))}, "subject_id": "nobody"})
    assert r.status_code == 404


def test_auth_scopes(server: tuple[str, Path], reader: httpx.Client) -> None:
    url = server[0]
    assert httpx.post(url + "/embed", json={"images": [{"data": _b64(_png(5))}]}).status_code == 401
    wrong = httpx.post(url + "/embed", json={"images": []}, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown API key"
    denied = reader.post("/gallery/subjects/eve/faces", json={"images": [{"data": _b64(_png(6))}]})
    assert denied.status_code == 403 and "scope" in denied.json()["detail"]
    assert reader.delete("/gallery/subjects/eve").status_code == 403
    bearer = httpx.get(url + "/gallery/subjects", headers={"Authorization": f"Bearer {READER}"})
    assert bearer.status_code == 200
    assert httpx.get(url + "/healthz").status_code == 200  # probes need no key


def test_metrics_count_requests(reader: httpx.Client) -> None:
    reader.get("/gallery/subjects")
    text = reader.get("/metrics").text
    assert 'lrface_requests_total{method="GET",route="/gallery/subjects",status="200"}' in text
    assert "lrface_gallery_faces" in text and 'version="tiny-test:1"' in text


def test_restart_keeps_gallery_and_refuses_other_model(model_dir: Path, tmp_path: Path) -> None:
    env = {"LRFACE_MODEL": str(model_dir), "LRFACE_GALLERY_DIR": str(tmp_path / "g")}
    with running_server(env) as url:
        assert (
            httpx.post(url + "/gallery/subjects/carol/faces", json={"images": [{"data": _b64(_png(7))}]}).status_code
            == 201
        )
    with running_server(env) as url:
        found = httpx.post(url + "/identify", json={"image": {"data": _b64(_png(7))}}).json()
        assert found["decision"] == "carol"
    other = write_tiny_model(tmp_path / "model2", version="2")
    with pytest.raises(RuntimeError, match="reembed"), running_server({**env, "LRFACE_MODEL": str(other)}, timeout=30):
        pass


def test_real_faces_of_other_photos_are_identified(tmp_path: Path) -> None:
    """The released model on real photos: one photo of each of six people enrolled, *other* photos of
    three of them identified (faces found and aligned with detect=true). Before, this test queried the
    enrolled bytes themselves with a random-projection model: a score of 1.0 by construction."""
    from lrface.settings import BUNDLED_MODEL_DIR

    people = ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon"]
    photos = {name: lfw_faces(name, 4) for name in people}
    env = {"LRFACE_MODEL": str(BUNDLED_MODEL_DIR), "LRFACE_GALLERY_DIR": str(tmp_path / "g")}
    with running_server(env) as url, httpx.Client(base_url=url, timeout=60) as client:
        for name in people:
            first = photos[name][0]
            r = client.post(f"/gallery/subjects/{name}/faces", files={"images": (first.name, first.read_bytes())},
                            data={"detect": "true"})  # fmt: skip
            assert r.status_code == 201, r.text
        for name, index in (("George_W_Bush", 1), ("George_W_Bush", 2), ("Colin_Powell", 1), ("Ariel_Sharon", 2)):
            probe = photos[name][index]
            assert probe != photos[name][0]
            found = client.post("/identify", files={"image": (probe.name, probe.read_bytes())},
                                data={"detect": "true"}).json()  # fmt: skip
            assert found["decision"] == name, (probe.name, found["matches"][:2])
            assert found["matches"][0]["score"] < 0.999  # another photo: no identical embedding


def test_reembed_command_moves_gallery_to_new_model(model_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.server import ROOT

    gallery = tmp_path / "g"
    env = {"LRFACE_MODEL": str(model_dir), "LRFACE_GALLERY_DIR": str(gallery)}
    with running_server(env) as url:
        r = httpx.post(url + "/gallery/subjects/dave/faces", json={"images": [{"data": _b64(_png(8))}]})
        assert r.status_code == 201
    other = write_tiny_model(tmp_path / "model2", version="2")
    new_env = {**os.environ, **env, "LRFACE_MODEL": str(other)}
    result = subprocess.run(
        [sys.executable, "-m", "lrface_cli", "gallery", "reembed"],
        env=new_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "re-embedded 1 faces with tiny-test:2" in result.stdout
    with running_server({**env, "LRFACE_MODEL": str(other)}) as url:
        assert httpx.get(url + "/readyz").json()["gallery_faces"] == 1
        found = httpx.post(url + "/identify", json={"image": {"data": _b64(_png(8))}}).json()
        assert found["decision"] == "dave" and found["model_version"] == "tiny-test:2"
