"""Names and records shared by tests/models (a module of its own: test files must not import
`conftest`, which is ambiguous with several conftest.py files on sys.path)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.batch_plan import plan_batches
from serving.engine import l2_normalize

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


# The runtimes tokenize (`tokenize` / `encode`) and run one batch (`forward`); batching is the
# ml-api's (serving/batcher.py). These run a whole list as one batch, as tests need.


def embed(embedder: Any, texts: list[str], normalize: bool = True) -> np.ndarray:
    """Token ids then one forward, L2-normalized unless `normalize` is False."""
    out = embedder.forward(embedder.tokenize(texts, truncate=True))
    return l2_normalize(out).astype(np.float32, copy=False) if normalize else out


def in_planned_batches(
    forward: Callable[[list[Any]], np.ndarray], items: list[Any], lengths: list[int], budget: int
) -> np.ndarray:
    """`forward` over the sub-batches the ml-api's batcher would plan (length-sorted, within
    `budget` padded tokens, 2 items at most), put back in input order."""
    parts: dict[int, np.ndarray] = {}
    for idx in plan_batches(lengths, budget, 2):
        for i, row in zip(idx, forward([items[i] for i in idx]), strict=True):
            parts[i] = row
    return np.stack([parts[i] for i in range(len(items))])


def score(reranker: Any, pairs: list[tuple[str, str]]) -> list[float]:
    return reranker.forward(reranker.encode(pairs)).tolist()


def count_tokens(reranker: Any, pairs: list[tuple[str, str]]) -> list[int]:
    return [e.length for e in reranker.encode(pairs)]
