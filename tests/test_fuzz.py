"""Fuzzing: the image decoder and preprocessing on random bytes and on random valid images of odd
sizes and modes (hypothesis), and the HTTP API from its own OpenAPI document (schemathesis)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lrface.preprocessing import ImageDecodeError, face_to_input, load_image
from tests.model_fixtures import tiny_service_env
from tests.server import running_server

FUZZ_EXAMPLES = int(os.environ.get("LRFACE_FUZZ_EXAMPLES", "300"))
# Image modes Pillow writes in each format (every mode a real upload could arrive in).
FORMAT_MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "WEBP": ["RGB", "RGBA"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "F"],
    "PPM": ["L", "RGB"],
}


@settings(max_examples=FUZZ_EXAMPLES * 2, deadline=None)
@given(data=st.binary(max_size=4096))
def test_random_bytes_decode_or_fail_clearly(data: bytes) -> None:
    try:
        image = load_image(data, max_pixels=4_000_000)
    except ImageDecodeError as exc:
        assert str(exc)  # a message for the 4xx body
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@st.composite
def encoded_images(draw: st.DrawFn) -> tuple[bytes, int, int]:
    fmt = draw(st.sampled_from(sorted(FORMAT_MODES)))
    mode = draw(st.sampled_from(FORMAT_MODES[fmt]))
    width, height = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**32 - 1))
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = (
        Image.fromarray(rgb).convert(mode)
        if mode not in ("I;16", "I", "F")
        else Image.fromarray(rgb[..., 0]).convert(mode)
    )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue(), width, height


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # truncated TIFFs: expected here
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=encoded_images(), size=st.sampled_from([8, 12, 16, 24, 32]), truncate=st.integers(0, 40))
def test_valid_images_of_odd_sizes_and_modes(sample: tuple[bytes, int, int], size: int, truncate: int) -> None:
    data, width, height = sample
    image = load_image(data)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    tensor = face_to_input(image, size)
    assert tensor.shape == (3, size, size) and tensor.dtype == np.float32 and np.isfinite(tensor).all()
    if truncate and len(data) > truncate + 8:  # a cut-off upload: decoded or refused, never a crash
        with contextlib.suppress(ImageDecodeError):
            load_image(data[: len(data) - truncate])


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    env = tiny_service_env(root, API_KEYS="fuzz-admin:admin", MAX_BODY_BYTES="1000000")
    with running_server(env) as url:
        yield url


def test_api_schema_fuzzing_finds_no_server_errors(api_url: str, tmp_path: Path) -> None:
    """Every operation of /openapi.json, every phase (examples, coverage, fuzzing, stateful)."""
    report = tmp_path / "schemathesis.json"
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{api_url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--header",
            "X-API-Key: fuzz-admin",
            "--max-examples",
            str(max(10, FUZZ_EXAMPLES // 5)),
            "--seed",
            "7",
            "--request-timeout",
            "30",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,  # schemathesis writes its cache into the working directory
    )
    assert run.returncode == 0, run.stdout[-6000:]
    cases = json.loads(report.read_text())["test_cases"]
    print(f"schemathesis: {cases['generated']} cases, {cases['with_failures']} with failures")
    assert cases["generated"] >= 200 and cases["with_failures"] == 0 and cases["errored"] == 0
