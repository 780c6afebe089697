"""The reranker interface: what the service needs from any cross-encoder runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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


class Reranker(Protocol):
    info: RerankerInfo

    def count_tokens(self, pairs: list[tuple[str, str]]) -> list[int]:
        """Untruncated token count of each (query, passage) pair, special tokens included."""
        ...

    def cut_passages(self, texts: list[str], max_tokens: int) -> list[str]:
        """Each text cut to its first `max_tokens` tokens (Cohere's max_tokens_per_doc)."""
        ...

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Raw relevance logits (no sigmoid), truncated at max_length. Thread-safe."""
        ...
