"""ml-api configuration: one pydantic-settings class, read from ML_API_* environment variables."""

from __future__ import annotations

import logging
import os
import warnings
from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

# The ml-api's port, defined once: the service, `ragctl up` and the compose file agree on it
# (tests/test_defaults.py checks the compose file and the backend's default URL).
ML_API_PORT = 8001


def available_cores() -> int:
    """Cores this process may really use (cgroup/affinity aware), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class MLSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ML_API_", env_file=".env", extra="ignore", populate_by_name=True
    )

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
    ort_memory: Literal["shrink", "arena", "off"] = Field(
        "shrink",
        description="ONNX Runtime CPU memory: `arena` keeps the peak of the largest batch for "
        "good; `shrink` frees the arena's unused chunks after each run; `off` uses malloc.",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Body deadline (408), extended 1 s per 64 KiB received."
    )
    max_queued_tokens: int = Field(
        2_000_000, ge=1, description="Tokens waiting for compute before new work gets 429."
    )
    # Bulk work (X-Priority: bulk) has its own, small bound: a bulk caller should be told to back
    # off (429 + Retry-After) after a few seconds of queued work, not wait past its read timeout.
    max_queued_bulk_tokens: int = Field(
        131_072, ge=1, description="Bulk-lane tokens waiting for compute before bulk work gets 429."
    )
    bulk_batch_tokens: int = Field(
        0,
        ge=0,
        description="Padded tokens per bulk forward pass; 0 = 256 on CPU, max_batch_tokens on "
        "GPU. Small on CPU so that an interactive request waits at most one short bulk pass.",
    )

    bulk_runner: Literal["auto", "background", "shared"] = Field(
        "auto",
        description="Where bulk embedding passes run. `background`: their own threads at a "
        "lower OS priority (Linux), on a single-threaded copy of the model, so interactive "
        "passes never wait behind one and get the CPU first (the model's weights are held "
        "twice); `shared`: the model worker alternates the lanes; `auto`: background on CPU, "
        "shared on GPU.",
    )
    bulk_threads: int = Field(
        0, ge=0, description="Background bulk threads; 0 = one per available core."
    )
    bulk_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="Niceness added to the background bulk threads (0: same priority). Bulk "
        "still gets a share: after ML_API_BULK_YIELD_AFTER interactive passes while a bulk pass "
        "could not finish, the model waits for it.",
    )
    bulk_yield_after: int = Field(32, ge=1, description="See ML_API_BULK_NICE.")

    tracing: bool = Field(
        False,
        description="Run BentoML's OpenTelemetry middleware on requests. Turn it on together "
        "with a tracing exporter in BentoML's configuration; off, requests skip the span work "
        "(~0.5 ms of CPU each, measured) whose spans nothing would receive: BentoML samples "
        "none by default.",
    )

    # ML_API_KEY: the same name the backend sends it under. ML_API_API_KEY (the prefix doubled)
    # is the old name, still read, with a warning.
    api_key: str | None = Field(
        None,
        validation_alias="ML_API_KEY",
        description="When set, inference routes need Bearer auth (env ML_API_KEY).",
    )
    deprecated_api_key: str | None = Field(
        None, validation_alias="ML_API_API_KEY", exclude=True, repr=False
    )

    @model_validator(mode="after")
    def _old_api_key_name(self) -> MLSettings:
        if self.deprecated_api_key is not None:
            msg = "ML_API_API_KEY is deprecated: set ML_API_KEY (the name the backend uses)"
            warnings.warn(msg, DeprecationWarning, stacklevel=2)
            log.warning(msg)  # DeprecationWarning is hidden by default; operators see the log
            if self.api_key is None:
                self.api_key = self.deprecated_api_key
        return self

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

    def background_bulk(self, on_gpu: bool) -> bool:
        if self.bulk_runner == "auto":
            return not on_gpu
        return self.bulk_runner == "background"

    def bulk_thread_count(self) -> int:
        return self.bulk_threads or available_cores()

    def bulk_token_budget(self, on_gpu: bool) -> int:
        if self.bulk_batch_tokens:
            return self.bulk_batch_tokens
        return self.batch_token_budget(on_gpu) if on_gpu else 256


@lru_cache
def get_settings() -> MLSettings:
    return MLSettings()
