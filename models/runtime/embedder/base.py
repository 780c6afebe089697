"""The embedder interface: what the service needs from any embedding runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

Pooling = Literal["mean", "cls", "last"]


@dataclass(frozen=True)
class EmbedderInfo:
    name: str  # model store name, e.g. "embedder"
    tag: str  # full store tag, e.g. "embedder:abc123"
    source: str  # Hugging Face id or local folder it was imported from
    revision: str | None
    dimension: int
    max_length: int  # tokens, including special tokens
    pooling: Pooling
    normalize: bool  # whether the model is meant to be L2-normalized
    dtype: str  # "float32" / "float16"
    device: str  # "cuda:0" / "cpu"
    providers: list[str] = field(default_factory=list)  # ORT providers actually in use
    backend: str = "onnx"
    # name -> text prepended to inputs (asymmetric models); the default applies when none is asked
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None


class Embedder(Protocol):
    info: EmbedderInfo

    def tokenize(self, texts: list[str], truncate: bool = True) -> list[list[int]]:
        """Token ids per text, special tokens included, unpadded; truncated at max_length when
        `truncate` (else returned whole, so callers can reject over-long input)."""
        ...

    def tokenizer_json(self) -> str:
        """The fast tokenizer as tokenizer.json text (clients chunk with the model's tokens)."""
        ...

    def forward(self, batch: list[list[int]]) -> np.ndarray:
        """Pooled, NOT normalized float32 embeddings (n, dimension) for one padded batch.
        Pads to the longest in `batch`, which the caller planned (the ml-api's batcher: there
        is no batching inside a runtime). Thread-safe."""
        ...

    def background_forward(self) -> Callable[[list[list[int]]], np.ndarray] | None:
        """`forward` on a runtime of its own whose compute stays on the calling thread (one
        intra-op thread), so a low-priority thread that calls it keeps all of its work at that
        priority; None when the runtime cannot (bulk passes then share the model's worker)."""
        ...
