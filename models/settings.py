"""ml-api configuration: one pydantic-settings class, read from ML_API_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def available_cores() -> int:
    """Cores this process may really use (cgroup/affinity aware), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class MLSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ML_API_", env_file=".env", extra="ignore")

    # Which models to serve: BentoML model store names (tag `name` or `name:version`).
    embedder: str = "embedder"
    reranker: str = "reranker"
    require_reranker: bool = Field(
        False, description="Fail at start-up when the reranker model is not in the store."
    )
    reranker_backend: Literal["flag", "onnx"] = Field(
        "flag",
        description="Cross-encoder runtime: FlagEmbedding (PyTorch) or ONNX Runtime (model.onnx).",
    )

    # Devices. "auto" uses CUDA only when a GPU is really present.
    device: Literal["auto", "cuda", "cpu"] = "auto"
    on_cuda_unavailable: Literal["fail", "warn"] = Field(
        "fail", description="What to do when CUDA was wanted but the session fell back to CPU."
    )
    fp16: bool = Field(True, description="Half precision on GPU (ignored on CPU).")
    embedder_precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description="int8: the embedder's dynamically quantized model (imported with --int8), "
        "CPU only; on a GPU it is ignored with a warning.",
    )
    intra_op_threads: int = Field(default_factory=available_cores, ge=1)
    ort_spinning: bool = Field(
        False,
        description="Let ONNX Runtime's CPU threads spin between runs (lower latency when the "
        "cores are otherwise idle; off because the spinning takes CPU from request handling "
        "and from services on the same host).",
    )

    # Batching (the in-service token-budget batcher).
    max_batch_tokens: int = Field(
        0, ge=0, description="Padded tokens per forward pass; 0 = 16384 on CPU, 65536 on GPU."
    )
    max_batch_items: int = Field(
        0, ge=0, description="Items per forward pass at most; 0 = 32 on CPU, 256 on GPU."
    )
    rerank_max_length: int = Field(512, ge=8, description="Max tokens of a (query, passage) pair.")

    # Admission control and input limits.
    max_client_batch: int = Field(2048, ge=1, description="Items per request at most.")
    max_payload_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Request body size.")
    body_timeout_s: float = Field(
        30.0, gt=0, description="Body deadline (408), extended 1 s per 64 KiB received."
    )
    max_queued_tokens: int = Field(
        2_000_000, ge=1, description="Tokens waiting for compute before new work gets 429."
    )

    api_key: str | None = Field(None, description="When set, inference routes need Bearer auth.")

    def batch_item_cap(self, on_gpu: bool) -> int:
        # On CPU, cost follows padded tokens and batches above ~32 bring nothing: smaller
        # batches pad less (measured: short texts 225 -> 474 texts/s at 16 clients).
        if self.max_batch_items:
            return self.max_batch_items
        return 256 if on_gpu else 32

    def batch_token_budget(self, on_gpu: bool) -> int:
        if self.max_batch_tokens:
            return self.max_batch_tokens
        return 65536 if on_gpu else 16384


@lru_cache
def get_settings() -> MLSettings:
    return MLSettings()
