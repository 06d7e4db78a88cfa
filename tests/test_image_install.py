"""What the CPU image does, outside Docker: a non-editable install of exactly the files the Dockerfile
copies, with the extras it installs, then its CMD with its ENV from a folder outside the checkout.
Slow (a fresh virtual environment): runs with `make image-check`, not in `make test`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lrface.model_card import load_card
from service.process import ROOT, free_port, start_server
from tests.test_deploy import DOCKERFILES, _instruction, _instructions

pytestmark = pytest.mark.image


def test_image_install_serves_without_torch(tmp_path: Path, lfw_root: Path) -> None:
    src, image_root = tmp_path / "src", tmp_path / "image"  # WORKDIR /src, and the image's /
    for keyword, rest in _instructions(DOCKERFILES["cpu"]):
        if keyword != "COPY" or "--from" in rest:
            continue
        *sources, target = rest.split()
        base = image_root / target.lstrip("/") if target.startswith("/") else src / target
        for source in sources:
            dest = base / Path(source).name if target.endswith("/") else base
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (ROOT / source).is_dir() else shutil.copy)(ROOT / source, dest)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, f"{src}[cpu,align]"], check=True, cwd=src)
    listed = subprocess.run([str(venv / "bin" / "pip"), "list"], capture_output=True, text=True, check=True).stdout
    assert "onnxruntime " in listed and "faiss-cpu" in listed and "torch" not in listed

    model = image_root / "opt" / "lrface" / "models" / "lrface-student"
    assert (model / "model.onnx").exists() and (model / "card.json").exists()
    detector = image_root / "opt" / "lrface" / "models" / "mtcnn"
    assert all((detector / f"{net}.onnx").exists() for net in ("pnet", "rnet", "onet"))
    teacher = image_root / "opt" / "lrface" / "models" / "teacher-dlib"
    assert (teacher / "dlib_resnet.onnx").exists() and (teacher / "card.json").exists()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "LRFACE_MODEL": str(model),
        "LRFACE_DETECTOR_MODEL": str(detector),
        "LRFACE_TEACHER_MODEL": str(teacher),
        "LRFACE_GALLERY_DIR": str(tmp_path / "data" / "gallery"),
        "LRFACE_HOST": "0.0.0.0",
        "LRFACE_WORKERS": "2",
        "LRFACE_PORT": str(port := free_port()),
        "LRFACE_API_KEYS": "image-test-admin:admin",  # on 0.0.0.0 the service refuses to run without keys
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LRFACE_") and k not in ("PATH", "VIRTUAL_ENV")}
    server = start_server({**clean, **env}, command=_instruction(DOCKERFILES["cpu"], "CMD"), port=port)
    try:
        ready = httpx.get(server.url + "/readyz").json()
        assert ready["model"] == "lrface-student" and ready["gallery_store"].startswith("sqlite:")
        card = load_card(model)
        assert card.routing is not None
        # the teacher (ONNX + dlib's aligner) serves large faces
        assert ready["teacher_from_px"] == card.routing.chip_switch
        # The image's detector finds the face of an ordinary photo (detect=auto), without torch.
        photo = lfw_root / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg"
        embedded = httpx.post(
            server.url + "/embed",
            files={"images": (photo.name, photo.read_bytes(), "image/jpeg")},
            headers={"X-API-Key": "image-test-admin"},
            timeout=60,
        )
        assert embedded.status_code == 200, embedded.text
        assert [f["input"] for f in embedded.json()["faces"]][:1] == ["detected"]
        health = _instruction(DOCKERFILES["cpu"], "HEALTHCHECK")[1:]
        assert subprocess.run(health, env={**clean, **env}, capture_output=True).returncode == 0
    finally:
        server.stop()
    train = subprocess.run([str(venv / "bin" / "lrface"), "train", "x.json"], env={**clean, **env}, capture_output=True,
                           text=True)  # fmt: skip
    assert train.returncode == 2 and "the `train` extra (torch)" in train.stderr
