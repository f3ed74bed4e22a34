"""A runtime built from app settings changed for one test, as the Functions host would build it."""

from __future__ import annotations

import pytest

from shared.runtime import Runtime, get_runtime
from shared.settings import get_settings


def runtime_with(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Runtime:
    """Set ``settings`` (environment variables, e.g. ``SYNC_CONFLICT_POLICY``) and build the runtime afresh; the
    ``runtime`` fixture clears the caches again after the test."""
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    get_runtime.cache_clear()
    return get_runtime()
