"""The ml-api's embedding path, in-process: tokenize, the batcher's plan (length-sorted,
token-budget sub-batches), one `forward` per sub-batch, normalize. The runtimes themselves only
tokenize and run one batch; benchmarks that time a runtime without HTTP plan batches here as
serving/batcher.py does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.runtime.settings import MLSettings
from serving.batch_plan import plan_batches
from serving.engine import l2_normalize


def embed(
    embedder: Any, texts: Sequence[str], settings: MLSettings, normalize: bool = True
) -> np.ndarray:
    """(n, dim) float32 embeddings of `texts` in input order, batched like the ml-api."""
    on_gpu = embedder.info.device.startswith("cuda")
    ids = embedder.tokenize(list(texts), truncate=True)
    out = np.zeros((len(ids), embedder.info.dimension), dtype=np.float32)
    budget, cap = settings.batch_token_budget(on_gpu), settings.batch_item_cap(on_gpu)
    for idx in plan_batches([len(x) for x in ids], budget, cap):
        out[idx] = embedder.forward([ids[i] for i in idx])
    return l2_normalize(out).astype(np.float32, copy=False) if normalize else out
