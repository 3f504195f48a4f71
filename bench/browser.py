"""Headless Chromium for the dashboard's tests, its benchmark and its screenshot.

Debian's ``chromium`` (``apt-get install chromium``), driven by Playwright's Python package; never
a browser Playwright downloads (``playwright install`` is not needed, and not used). The machines
that run these refuse the browser's background connections, which the flags turn off.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ("CHROMIUM", "CHROMIUM_ARGS", "missing")

#: Debian's Chromium.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing() -> str | None:
    """Why the browser cannot run here (None when it can)."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright's Python package is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no browser at {CHROMIUM} (apt-get install chromium)"
    return None
