from __future__ import annotations

from pathlib import Path

import pytest

from lrface.settings import get_settings


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    root = get_settings().lfw_root()
    if not (root / "pairsDevTest.txt").exists():
        pytest.skip(f"LFW not found at {root} (set LRFACE_DATA)")
    return root
