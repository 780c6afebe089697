"""Prometheus metrics of the batcher, exported on BentoML's /metrics.

Created on first use, not at import: BentoML sets PROMETHEUS_MULTIPROC_DIR in the worker after
service.py is imported, and metrics made before that never reach /metrics.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _histograms() -> dict[str, Any]:
    from prometheus_client import Histogram

    return {
        "size": Histogram(
            "ml_api_batch_size",
            "Items per forward pass",
            ["task"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        ),
        "tokens": Histogram(
            "ml_api_batch_padded_tokens",
            "Padded tokens per forward pass",
            ["task"],
            buckets=(64, 256, 1024, 4096, 16384, 65536, 262144),
        ),
        "seconds": Histogram(
            "ml_api_batch_seconds",
            "Forward pass duration",
            ["task"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
    }


def observe_batch(task: str, items: int, padded_tokens: int, seconds: float) -> None:
    h = _histograms()
    h["size"].labels(task=task).observe(items)
    h["tokens"].labels(task=task).observe(padded_tokens)
    h["seconds"].labels(task=task).observe(seconds)
