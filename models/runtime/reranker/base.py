"""The reranker interface: what the service needs from any cross-encoder runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class RerankerInfo:
    name: str
    tag: str
    source: str
    revision: str | None
    max_length: int  # tokens of a (query, passage) pair
    dtype: str
    device: str
    providers: list[str] = field(default_factory=list)
    backend: str = "flag"  # "flag" (FlagEmbedding) or "onnx"


@dataclass(frozen=True)
class EncodedPair:
    """One (query, passage) pair as the model sees it, tokenized once: the engine checks
    limits and plans batches on it, and `forward` runs it."""

    input_ids: list[int]  # special tokens included, truncated at max_length
    token_type_ids: list[int] | None  # None when the model takes none (XLM-R)
    length: int  # untruncated length, special tokens included (limits, usage)


class Reranker(Protocol):
    """Like `Embedder`: `encode` tokenizes, `forward` runs one batch that the caller planned
    (the ml-api's batcher); there is no batching inside a runtime."""

    info: RerankerInfo

    def encode(self, pairs: list[tuple[str, str]]) -> list[EncodedPair]:
        """Each (query, passage) pair tokenized and truncated as FlagReranker does it."""
        ...

    def cut_passages(self, texts: list[str], max_tokens: int) -> list[str]:
        """Each text cut to its first `max_tokens` tokens (Cohere's max_tokens_per_doc)."""
        ...

    def forward(self, batch: list[EncodedPair]) -> np.ndarray:
        """Raw relevance logits (n,) float32, no sigmoid, for one padded batch. Thread-safe."""
        ...
