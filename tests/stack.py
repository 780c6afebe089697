"""Paths and model names shared by the tests (imported by name; never import `conftest`)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Names the session's test model store uses for each model.
TINY_EMBEDDER = "tiny-embedder"
TINY_RERANKER = "tiny-reranker"
MINILM = "minilm"
NO_RERANKER = "absent-reranker"
