"""Named galleries over real HTTP: create, list, enrol, identify and verify per gallery (JSON and
multipart), isolation between galleries, unknown galleries (404), keys limited to some galleries
(403), and deleting a gallery (the default one cannot be)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lrface.settings import KeyGrant, Settings
from service.load import face_png
from tests.model_fixtures import tiny_service_env
from tests.server import running_server

ADMIN, READER = "g-admin", "g-reader"
LOBBY_READ, LOBBY_ADMIN = "g-lobby-read", "g-lobby-admin"  # read@lobby, admin@lobby|default


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    keys = f"{ADMIN}:admin,{READER}:read,{LOBBY_READ}:read@lobby,{LOBBY_ADMIN}:admin@lobby|default"
    env = tiny_service_env(tmp_path_factory.mktemp("galleries"), API_KEYS=keys)
    with running_server(env) as base, httpx.Client(base_url=base, timeout=30) as http:
        yield http


def _as(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _enroll(client: httpx.Client, path: str, seed: int, key: str = ADMIN) -> httpx.Response:
    return client.post(path, json={"images": [{"data": face_png(seed)}]}, headers=_as(key))


def _identify(client: httpx.Client, seed: int, key: str = ADMIN, **fields: Any) -> httpx.Response:
    return client.post("/identify", json={"image": {"data": face_png(seed)}, "top_k": 5, **fields}, headers=_as(key))


def _identify_form(client: httpx.Client, seed: int, key: str = ADMIN, **fields: str) -> httpx.Response:
    files = {"image": ("probe.png", base64.b64decode(face_png(seed)))}
    return client.post("/identify", files=files, data={"top_k": "5", **fields}, headers=_as(key))


def _exact(response: httpx.Response) -> list[str]:
    """Subjects matched by this very image (score 1): who holds this face in the searched gallery."""
    assert response.status_code == 200, response.text
    return [m["subject_id"] for m in response.json()["matches"] if m["score"] > 0.999]


@pytest.fixture(scope="module")
def lobby(client: httpx.Client) -> str:
    """Gallery 'lobby' with alice (face 2) and bob (face 3); the default gallery has alice (face 1)."""
    made = client.put("/galleries/lobby", headers=_as(ADMIN))
    assert made.status_code == 201, made.text
    assert made.json()["name"] == "lobby" and made.json()["subject_count"] == 0
    assert client.put("/galleries/lobby", headers=_as(ADMIN)).status_code == 200  # idempotent
    assert _enroll(client, "/gallery/subjects/alice/faces", 1).status_code == 201
    assert _enroll(client, "/galleries/lobby/subjects/alice/faces", 2).status_code == 201  # same id, another gallery
    assert _enroll(client, "/galleries/lobby/subjects/bob/faces", 3).status_code == 201
    return "lobby"


def test_galleries_are_listed_with_counts_and_subjects_stay_in_their_gallery(client: httpx.Client, lobby: str) -> None:
    listed = {g["name"]: g for g in client.get("/galleries", headers=_as(READER)).json()["items"]}
    assert listed["default"]["subject_count"] >= 1 and listed[lobby] | {"created_at": 0} == {
        "name": lobby, "created_at": 0, "subject_count": 2, "face_count": 2}  # fmt: skip
    assert client.get("/galleries/lobby", headers=_as(READER)).json()["face_count"] == 2
    page = client.get("/galleries/lobby/subjects", headers=_as(READER)).json()
    assert [s["subject_id"] for s in page["items"]] == ["alice", "bob"] and page["total"] == 2
    default_ids = {s["subject_id"] for s in client.get("/gallery/subjects", headers=_as(READER)).json()["items"]}
    assert "bob" not in default_ids and "alice" in default_ids
    lobby_alice = client.get("/galleries/lobby/subjects/alice", headers=_as(READER)).json()
    default_alice = client.get("/gallery/subjects/alice", headers=_as(READER)).json()
    assert lobby_alice["faces"][0]["face_id"] != default_alice["faces"][0]["face_id"]
    face = lobby_alice["faces"][0]["face_id"]
    chip = client.get(f"/galleries/lobby/subjects/alice/faces/{face}/chip", headers=_as(READER))
    assert chip.status_code == 200 and chip.headers["content-type"] == "image/png"
    assert client.get(f"/gallery/subjects/alice/faces/{face}/chip", headers=_as(READER)).status_code == 404


def test_identify_and_verify_search_only_the_gallery_named(client: httpx.Client, lobby: str) -> None:
    assert _exact(_identify(client, 3, gallery=lobby)) == ["bob"]
    assert _exact(_identify_form(client, 3, gallery=lobby)) == ["bob"]  # the multipart body takes it too
    assert _exact(_identify(client, 3)) == []  # bob is not in the default gallery
    assert _exact(_identify(client, 1, gallery=lobby)) == []  # default alice's face is not lobby alice's
    assert _exact(_identify(client, 1)) == ["alice"] and _exact(_identify(client, 2, gallery=lobby)) == ["alice"]
    fused = client.post("/identify", headers=_as(ADMIN), json={
        "images": [{"data": face_png(3)}, {"data": face_png(3)}], "fuse": True, "gallery": lobby})  # fmt: skip
    assert _exact(fused) == ["bob"]
    probe = {"image_a": {"data": face_png(3)}, "subject_id": "bob"}
    same = client.post("/verify", json={**probe, "gallery": lobby}, headers=_as(READER))
    assert same.status_code == 200 and same.json()["score"] > 0.999
    files = {"image_a": ("a.png", base64.b64decode(face_png(3)))}
    form = client.post("/verify", files=files, data={"subject_id": "bob", "gallery": lobby}, headers=_as(READER))
    assert form.status_code == 200 and form.json()["same_person"]
    absent = client.post("/verify", json=probe, headers=_as(READER))  # no bob in the default gallery
    assert absent.status_code == 404 and "bob" in absent.json()["detail"]


def test_unknown_and_malformed_galleries_are_clear_4xx(client: httpx.Client, lobby: str) -> None:
    for response in (
        _identify(client, 1, gallery="nope"),
        _identify_form(client, 1, gallery="nope"),
        client.post(
            "/verify", json={"image_a": {"data": face_png(1)}, "subject_id": "x", "gallery": "nope"}, headers=_as(ADMIN)
        ),  # fmt: skip
        client.get("/galleries/nope", headers=_as(ADMIN)),
        client.get("/galleries/nope/subjects", headers=_as(ADMIN)),
        _enroll(client, "/galleries/nope/subjects/x/faces", 9),
        client.delete("/galleries/nope", headers=_as(ADMIN)),
    ):
        assert response.status_code == 404 and "'nope'" in response.json()["detail"], response.text
    for response in (
        client.put("/galleries/-bad", headers=_as(ADMIN)),
        client.get("/galleries/a%20b/subjects", headers=_as(ADMIN)),
        _identify(client, 1, gallery="no way"),
        _identify_form(client, 1, gallery="../x"),
    ):
        assert response.status_code == 422 and isinstance(response.json()["detail"], str | list), response.text
    in_query = client.post("/identify?gallery=lobby", json={"image": {"data": face_png(1)}}, headers=_as(ADMIN))
    assert in_query.status_code == 422 and "gallery" in in_query.json()["detail"]


def test_keys_limited_to_galleries(client: httpx.Client, lobby: str) -> None:
    listed = client.get("/galleries", headers=_as(LOBBY_READ)).json()["items"]
    assert [g["name"] for g in listed] == [lobby]  # only what the key may see
    assert _exact(_identify(client, 3, LOBBY_READ, gallery=lobby)) == ["bob"]
    assert client.get("/galleries/lobby/subjects", headers=_as(LOBBY_READ)).status_code == 200
    refused = [
        _identify(client, 1, LOBBY_READ),  # the default gallery is not listed for this key
        _identify_form(client, 1, LOBBY_READ),
        client.get("/gallery/subjects", headers=_as(LOBBY_READ)),
        client.get("/gallery/subjects/alice", headers=_as(LOBBY_READ)),
        client.get("/galleries/default", headers=_as(LOBBY_READ)),
        client.get("/galleries/nope/subjects", headers=_as(LOBBY_READ)),  # 403, not 404: nothing is revealed
        client.post("/verify", json={"image_a": {"data": face_png(1)}, "subject_id": "alice"}, headers=_as(LOBBY_READ)),
    ]
    for response in refused:
        assert response.status_code == 403 and "lobby" in response.json()["detail"], response.text
    assert _enroll(client, "/galleries/lobby/subjects/carol/faces", 4, LOBBY_READ).status_code == 403  # read scope
    assert _enroll(client, "/galleries/lobby/subjects/carol/faces", 4, LOBBY_ADMIN).status_code == 201
    assert _enroll(client, "/gallery/subjects/carol/faces", 5, LOBBY_ADMIN).status_code == 201  # default is listed
    assert client.delete("/galleries/lobby/subjects/carol", headers=_as(LOBBY_ADMIN)).status_code == 200
    assert client.delete("/gallery/subjects/carol", headers=_as(LOBBY_ADMIN)).status_code == 200
    for response in (client.put("/galleries/other", headers=_as(LOBBY_ADMIN)),
                     client.delete("/galleries/lobby", headers=_as(LOBBY_ADMIN))):  # fmt: skip
        assert response.status_code == 403 and "limited to none" in response.json()["detail"]
    assert client.put("/galleries/other", headers=_as(READER)).status_code == 403


def test_deleting_a_gallery_takes_its_subjects_and_faces(client: httpx.Client) -> None:
    assert client.put("/galleries/temp", headers=_as(ADMIN)).status_code == 201
    assert _enroll(client, "/galleries/temp/subjects/dave/faces", 6).status_code == 201
    assert _exact(_identify(client, 6, gallery="temp")) == ["dave"]
    refused = client.delete("/galleries/default", headers=_as(ADMIN))
    assert refused.status_code == 409 and "cannot be deleted" in refused.json()["detail"]
    deleted = client.delete("/galleries/temp", headers=_as(ADMIN))
    assert deleted.status_code == 200 and deleted.json() == {"gallery": "temp", "deleted_subjects": 1,
                                                              "deleted_faces": 1}  # fmt: skip
    assert _identify(client, 6, gallery="temp").status_code == 404
    assert "temp" not in [g["name"] for g in client.get("/galleries", headers=_as(ADMIN)).json()["items"]]
    assert client.put("/galleries/temp", headers=_as(ADMIN)).json()["face_count"] == 0  # made again: empty
    assert _exact(_identify(client, 6, gallery="temp")) == []
    assert client.get("/readyz").json()["gallery_faces"] == sum(
        g["face_count"] for g in client.get("/galleries", headers=_as(ADMIN)).json()["items"])  # fmt: skip


def test_docs_and_metrics_name_the_mount(client: httpx.Client) -> None:
    assert client.get("/galleries/default/subjects", headers=_as(READER)).status_code == 200
    metrics = client.get("/metrics").text
    assert 'route="/galleries/{gallery}/subjects",status="200"' in metrics
    spec = client.get("/openapi.json").json()
    params = spec["paths"]["/galleries/{gallery}/subjects/{subject_id}/faces"]["post"]["parameters"]
    assert {p["name"] for p in params if p["in"] == "path"} == {"gallery", "subject_id"}
    identify = spec["paths"]["/identify"]["post"]["requestBody"]["content"]
    assert "gallery" in identify["multipart/form-data"]["schema"]["properties"]
    assert "gallery" in spec["components"]["schemas"]["IdentifyRequest"]["properties"]
    assert "gallery" in spec["components"]["schemas"]["VerifyRequest"]["properties"]


def test_key_syntax() -> None:
    grants = Settings(api_keys="a:read@lobby|staff, b:admin, c, d:@x").api_key_grants()
    assert grants == {"a": KeyGrant("read", frozenset({"lobby", "staff"})), "b": KeyGrant("admin"),
                      "c": KeyGrant("read"), "d": KeyGrant("read", frozenset({"x"}))}  # fmt: skip
    assert Settings(api_keys="a:read@lobby").parsed_api_keys() == {"a": "read"}
    for bad in ("a:read@", "a:admin@lo by", "a:read@x||y", "a:root@x"):
        with pytest.raises(ValueError, match="LRFACE_API_KEYS"):
            Settings(api_keys=bad).api_key_grants()


def test_a_trailing_newline_is_not_a_name(client: httpx.Client) -> None:
    """Python's ``re.match`` lets ``$`` match before a final newline: 'x\\n' passed as a gallery name
    (a gallery and index file 'index-student.x\\n.faiss') and as a subject id."""
    for response in (
        client.put("/galleries/newline%0A", headers=_as(ADMIN)),
        client.get("/galleries/default%0A/subjects", headers=_as(ADMIN)),
        client.get("/gallery/subjects/alice%0A", headers=_as(ADMIN)),
        _enroll(client, "/gallery/subjects/eve%0A/faces", 8),
    ):
        assert response.status_code == 422 and isinstance(response.json()["detail"], str), response.text
    assert "newline\n" not in [g["name"] for g in client.get("/galleries", headers=_as(ADMIN)).json()["items"]]


def test_two_faces_need_no_gallery_but_a_named_one_is_checked(client: httpx.Client, lobby: str) -> None:
    """/verify of two faces reads no gallery: a key limited to others may use it; naming a gallery
    (or a subject_id, in 'default' when none is named) is still checked."""
    pair = {"image_a": {"data": face_png(1)}, "image_b": {"data": face_png(1)}}
    answer = client.post("/verify", json=pair, headers=_as(LOBBY_READ))
    assert answer.status_code == 200 and answer.json()["same_person"], answer.text
    files = {"image_a": ("a.png", base64.b64decode(face_png(1))), "image_b": ("b.png", base64.b64decode(face_png(2)))}
    assert client.post("/verify", files=files, headers=_as(LOBBY_READ)).status_code == 200
    assert client.post("/verify", json={**pair, "gallery": lobby}, headers=_as(LOBBY_READ)).status_code == 200
    assert client.post("/verify", json={**pair, "gallery": "default"}, headers=_as(LOBBY_READ)).status_code == 403
    assert client.post("/verify", json={**pair, "gallery": "nope"}, headers=_as(ADMIN)).status_code == 404
    subject = {"image_a": {"data": face_png(1)}, "subject_id": "alice"}
    assert client.post("/verify", json=subject, headers=_as(LOBBY_READ)).status_code == 403
