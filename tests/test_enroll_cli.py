"""`lrface enroll DIR` on a small folder of real faces: local gallery and through the HTTP API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.faces import lfw_faces
from tests.model_fixtures import write_tiny_model
from tests.server import ROOT, running_server


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "people"
    for subject, name, count in (("bush", "George_W_Bush", 3), ("powell", "Colin_Powell", 2)):
        (root / subject).mkdir(parents=True)
        for f in lfw_faces(name, count):
            shutil.copy(f, root / subject / f.name)
    return root


def _enroll(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lrface_cli", "enroll", *args, "--no-progress"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_local_enroll_is_idempotent_and_reports_rejects(folder: Path, tmp_path: Path) -> None:
    env = {"LRFACE_MODEL": str(write_tiny_model(tmp_path / "m")), "LRFACE_GALLERY_DIR": str(tmp_path / "g")}
    first = _enroll([str(folder)], env)
    assert first.returncode == 0, first.stderr
    assert "enrolled 5, skipped 0" in first.stdout
    (folder / "powell" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    second = _enroll([str(folder)], env)
    assert second.returncode == 1
    assert "enrolled 0, skipped 5" in second.stdout and "rejected 1" in second.stdout
    assert "broken.jpg" in second.stderr


def test_remote_enroll_through_api(folder: Path, tmp_path: Path) -> None:
    env = {
        "LRFACE_MODEL": str(write_tiny_model(tmp_path / "m")),
        "LRFACE_GALLERY_DIR": str(tmp_path / "g"),
        "LRFACE_API_KEYS": "k1:admin",
    }
    with running_server(env) as url:
        bad_key = _enroll([str(folder), "--server", url, "--api-key", "wrong"], {})
        assert bad_key.returncode == 2 and "refused the API key" in bad_key.stderr
        ok = _enroll([str(folder), "--server", url, "--api-key", "k1"], {})
        assert ok.returncode == 0, ok.stderr
        assert "enrolled 5" in ok.stdout
        again = _enroll([str(folder), "--server", url, "--api-key", "k1"], {})
        assert "enrolled 0, skipped 5" in again.stdout
        page = httpx.get(url + "/gallery/subjects", headers={"X-API-Key": "k1"}).json()
        assert {i["subject_id"]: i["face_count"] for i in page["items"]} == {"bush": 3, "powell": 2}


def test_missing_folder_names_it(tmp_path: Path) -> None:
    result = _enroll([str(tmp_path / "nope")], {})
    assert result.returncode != 0 and "nope" in result.stderr


def test_a_photo_of_two_people_is_rejected_by_name_unless_detect_is_off(folder: Path, tmp_path: Path) -> None:
    """`lrface enroll` finds the face of each photo (detect auto); a photo with two faces of similar size
    is rejected, naming the file, and nothing of it is stored. `--detect false` takes images whole."""
    from PIL import Image

    pair = Image.new("RGB", (500, 250))
    for i, f in enumerate([*lfw_faces("Tony_Blair", 1), *lfw_faces("Donald_Rumsfeld", 1)]):
        pair.paste(Image.open(f).convert("RGB"), (250 * i, 0))
    pair.save(folder / "powell" / "with_friend.png")
    env = {"LRFACE_MODEL": str(write_tiny_model(tmp_path / "m")), "LRFACE_GALLERY_DIR": str(tmp_path / "g")}
    first = _enroll([str(folder)], env)
    assert first.returncode == 1 and "enrolled 5, skipped 0" in first.stdout and "rejected 1" in first.stdout
    assert "with_friend.png" in first.stderr and "similar size" in first.stderr
    whole = _enroll([str(folder), "--detect", "false"], env)
    assert whole.returncode == 0, whole.stderr
    assert "enrolled 6, skipped 0" in whole.stdout  # whole images are other faces than the detected ones
    bad = _enroll([str(folder), "--detect", "maybe"], env)
    assert bad.returncode == 2 and "--detect must be auto, true or false" in bad.stderr


def test_enroll_into_a_named_gallery_locally_and_through_the_api(folder: Path, tmp_path: Path) -> None:
    """`--gallery NAME` enrolls into that gallery (created when missing), and only there; reruns skip."""
    from service.gallery.store import GalleryStore

    env = {"LRFACE_MODEL": str(write_tiny_model(tmp_path / "m")), "LRFACE_GALLERY_DIR": str(tmp_path / "g")}
    first = _enroll([str(folder), "--gallery", "lobby"], env)
    assert first.returncode == 0, first.stderr
    assert "created gallery lobby" in first.stdout and "enrolled 5, skipped 0" in first.stdout
    again = _enroll([str(folder), "--gallery", "lobby"], env)
    assert "created gallery" not in again.stdout and "enrolled 0, skipped 5" in again.stdout
    store = GalleryStore.sqlite(tmp_path / "g")
    assert {g.name: g.face_count for g in store.list_galleries()} == {"default": 0, "lobby": 5}
    store.close()
    bad = _enroll([str(folder), "--gallery", "no way"], env)
    assert bad.returncode == 2 and "--gallery" in bad.stderr
    usage = _enroll(["--help"], env)
    assert usage.returncode == 0 and "--gallery" in usage.stdout
    env["LRFACE_API_KEYS"] = "k1:admin,k2:admin@lobby"
    with running_server(env) as url:
        limited = _enroll([str(folder), "--server", url, "--api-key", "k2", "--gallery", "staff"], {})
        assert limited.returncode == 2 and "refused the API key" in limited.stderr  # may not create galleries
        made = _enroll([str(folder), "--server", url, "--api-key", "k1", "--gallery", "staff"], {})
        assert made.returncode == 0, made.stderr
        assert "created gallery staff" in made.stdout and "enrolled 5" in made.stdout
        rerun = _enroll([str(folder), "--server", url, "--api-key", "k2", "--gallery", "lobby"], {})
        assert rerun.returncode == 0 and "enrolled 0, skipped 5" in rerun.stdout  # known there already
        for name in ("staff", "lobby"):
            page = httpx.get(f"{url}/galleries/{name}/subjects", headers={"X-API-Key": "k1"}).json()
            assert {i["subject_id"]: i["face_count"] for i in page["items"]} == {"bush": 3, "powell": 2}
        assert httpx.get(url + "/gallery/subjects", headers={"X-API-Key": "k1"}).json()["total"] == 0


def test_enroll_targets_take_gallery_names_only() -> None:
    """``--gallery`` goes into a route's path (and names index files): a trailing newline or a path is refused."""
    from service.enroll import RemoteService

    with httpx.Client(base_url="http://127.0.0.1:9") as client:
        for bad in ("lobby\n", "../gallery", "a/b"):
            with pytest.raises(ValueError, match="--gallery"):
                RemoteService(client, "http://127.0.0.1:9", target=bad)
        assert RemoteService(client, "http://127.0.0.1:9", target="lobby").subjects == "/galleries/lobby/subjects"
