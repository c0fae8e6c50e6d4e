"""Shared test fixtures. ../shared is read in place; tests needing it skip when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ROUTING_DATA = SHARED / "data" / "routing"
OPENAPI = SHARED / "specs" / "openai" / "openapi.json"


def require_shared(path: Path) -> Path:
    """Return ``path`` or skip the test, saying which file of ../shared is missing."""
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared folder beside the repository is absent)")
    return path


@pytest.fixture
def routing_data() -> Path:
    return require_shared(ROUTING_DATA)


@pytest.fixture
def openapi_spec() -> Path:
    return require_shared(OPENAPI)
