"""Fixtures of the CLI tests. The backend helpers (`launch_backend`, sample files) live in
tests/backend/backend_support.py; its folder goes on sys.path here so they can be reused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory for the CLI (no .env of the repository is read there)."""
    d = tmp_path / "work"
    d.mkdir()
    return d
