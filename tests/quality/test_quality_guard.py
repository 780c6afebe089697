"""Retrieval-quality regression guard: a SciFact subset through the real stack (ml-api with the
real MiniLM, backend, embedded Qdrant), scored with the same harness as the full benchmark
(benchmarks/quality.py). Thresholds are the full-run figures in docs/benchmarks.md: the subset
has fewer distractors, so a healthy pipeline scores at least that; a pooling, normalization,
truncation or fusion bug falls far below."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from stack import ROOT

from benchmarks import quality
from benchmarks.harness import backend_ingest, beir

sys.path.insert(0, str(ROOT / "tests" / "backend"))
from backend_support import launch_backend

SCIFACT = ROOT.parent / "shared" / "eval" / "scifact"
# Full SciFact train run (809 queries, 5,183 documents), docs/benchmarks.md.
FLOOR = {"dense": 0.64, "sparse": 0.68, "hybrid": 0.71}

pytestmark = pytest.mark.skipif(not SCIFACT.exists(), reason=f"no evaluation data at {SCIFACT}")


@pytest.fixture(scope="module")
def scifact_subset() -> beir.BeirData:
    data = beir.load_beir(SCIFACT, "train")
    return beir.select_subset(data, limit_queries=120, limit_docs=400, seed=0)


def test_subset_quality_per_mode(
    ml_api_minilm: str, scifact_subset: beir.BeirData, tmp_path: Path
) -> None:
    backend = launch_backend(tmp_path / "data", tmp_path / "backend.log", ml_api_url=ml_api_minilm)
    try:
        scores = asyncio.run(_evaluate(backend.url, scifact_subset))
    finally:
        backend.stop()
    print(scores)
    for mode, floor in FLOOR.items():
        assert scores[mode] >= floor, (mode, scores)
    # Fusion must add something over either side alone.
    assert scores["hybrid"] > max(scores["dense"], scores["sparse"]), scores


async def _evaluate(url: str, data: beir.BeirData) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        rep = await backend_ingest.ingest(client, data, concurrency=8, timeout_s=600)
        assert not rep.failed
        out = {}
        for mode in FLOOR:
            res = await quality.run_queries(client, data, rep, mode, False, 100, 4)
            assert res.run is not None, res.note
            out[mode] = beir.evaluate(data.qrels, res.run)["ndcg@10"]
        return out
