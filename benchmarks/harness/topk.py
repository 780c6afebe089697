"""Exact top-k retrieval runs from a score matrix: the in-process reference that quality.py,
quality_inprocess.py and int8.py all score against pytrec_eval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmarks.harness.beir import ranking_from_scores

TOP = 100  # results per query (Recall@100)
Run = dict[str, dict[str, float]]


def top_k_runs(qids: Sequence[str], dids: Sequence[str], scores: np.ndarray, k: int) -> Run:
    """{query: {doc: rank-derived score}} from a (queries x docs) score matrix; ties by doc id."""
    run: Run = {}
    k = min(k, scores.shape[1])
    for row, qid in enumerate(qids):
        s = scores[row]
        part = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
        # candidates at the boundary score may tie with excluded docs; good enough at k=100
        cand = {dids[j]: float(s[j]) for j in part if np.isfinite(s[j])}
        run[qid] = ranking_from_scores(cand, k)
    return run
