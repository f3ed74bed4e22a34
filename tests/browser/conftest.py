"""The browser tests' marker (``-m browser`` runs only them; ``-m "not browser"`` leaves them out)."""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "browser: the status page in headless Chromium (Debian's chromium and "
                                       "chromium-driver, installed by ./dev setup)")
