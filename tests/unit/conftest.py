"""Fixtures of the unit tests."""

import pytest


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """The cache (`DISTILLERY_CACHE_DIR`: the stores' mapped copies among others) in the test's own
    folder, not the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DISTILLERY_CACHE_DIR", str(cache))
    return cache
