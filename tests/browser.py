"""A real headless Chromium for the console tests: Debian's ``chromium`` driven by Playwright
(launched on the system browser; Playwright's own browser download is never used).

``LRFACE_TEST_BROWSER=required`` (set by ``.ci/run``) turns "no browser" into a failure instead of
a skip; ``LRFACE_TEST_CHROMIUM`` names another Chromium binary."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest


def _missing(message: str) -> NoReturn:
    if os.environ.get("LRFACE_TEST_BROWSER") == "required":
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str | None:
    named = os.environ.get("LRFACE_TEST_CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium() -> Iterator[Any]:
    """Yield a Playwright ``Browser`` on the system Chromium (headless)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (the dev extra)")
    executable = chromium_path()
    if executable is None:
        _missing("Chromium not found (apt-get install chromium; .ci/run installs it)")
    # Chromium refuses to start its sandbox as root (CI and these machines run the tests as root).
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=args, headless=True)
        try:
            yield browser
        finally:
            browser.close()
