"""Headless Chromium for the browser tests: Debian's ``chromium``, driven by Playwright.

Installed by ``.ci/install-chromium`` (``make test`` runs it), so a missing browser is a
failure, not a skip. The flags keep Chromium off the network: this machine has none, and
without them it retries background connections at every start.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed: run .ci/install-chromium")
    return path


@contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright ``Browser`` on Debian's Chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright

    # Playwright gives each launch a fresh temporary profile of its own.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=list(CHROMIUM_FLAGS)
        )
        try:
            yield browser
        finally:
            browser.close()
