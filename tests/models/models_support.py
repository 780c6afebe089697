"""Names and records shared by tests/models (a module of its own: test files must not import
`conftest`, which is ambiguous with several conftest.py files on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TINY_MEAN = "tiny-embedder"
TINY_CLS = "tiny-embedder-cls"
TINY_LAST = "tiny-embedder-last"
TINY_RERANKER = "tiny-reranker"


@dataclass
class Sources:
    mean: Path
    cls: Path
    last: Path
    cross_encoder: Path


@dataclass
class Defaults:
    lines: list[str]
    tags: dict[str, str | None]
