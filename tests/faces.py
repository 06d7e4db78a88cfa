"""Real face images for service tests: LFW files when the data is there, else skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrface.settings import get_settings


def lfw_faces(name: str, count: int) -> list[Path]:
    folder = get_settings().lfw_root() / "images" / name
    files = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    if len(files) < count:
        pytest.skip(f"LFW images of {name} not found (set LRFACE_DATA)")
    return files
