from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lrface.settings import get_settings
from tests.postgres import fresh_database, postgres_server


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    root = get_settings().lfw_root()
    if not (root / "pairsDevTest.txt").exists():
        pytest.skip(f"LFW not found at {root} (set LRFACE_DATA)")
    return root


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    existing = os.environ.get("LRFACE_TEST_DATABASE_URL")
    if existing:
        yield existing
        return
    with postgres_server() as url:
        yield url


_databases = itertools.count()


@pytest.fixture()
def postgres_url(postgres_admin_url: str) -> str:
    """An empty database of its own for each test."""
    return fresh_database(postgres_admin_url, f"lrface_test_{os.getpid()}_{next(_databases)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each gallery test runs against both stores."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gallery.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))
