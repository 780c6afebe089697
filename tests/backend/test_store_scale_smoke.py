"""Smoke test of the store scale benchmark (benchmarks/store_scale.py) at 2,000 points: both
engines (qdrant-client local mode and qdrant-edge) build, reopen and answer every query row,
the edge index rebuild runs off the serving path, and both engines return the same top-10s on
the sampled queries. The embedding cache is pre-filled with random unit vectors (the real run
embeds SciFact with MiniLM once), so no model is needed; no timing is asserted."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORDS = [a + b for a in ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo") for b in "nrstlmk"]


def make_data(folder: Path, docs: int = 200, queries: int = 20) -> None:
    rng = random.Random(0)
    folder.mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as fh:
        for i in range(docs):
            text = " ".join(
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14))) + "."
                for _ in range(4)
            )
            fh.write(json.dumps({"_id": str(i), "title": f"t{i}", "text": text}) + "\n")
    with (folder / "queries-train.jsonl").open("w") as fh:
        for i in range(queries):
            fh.write(json.dumps({"_id": f"q{i}", "text": " ".join(rng.sample(WORDS, 4))}) + "\n")


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_store_scale_smoke(tmp_path: Path) -> None:
    data, cache = tmp_path / "data", tmp_path / "cache"
    make_data(data)
    cache.mkdir()
    np.save(cache / "store-scale-base-500.npy", unit(500, 1))
    np.save(cache / "store-scale-queries-20.npy", unit(20, 2))
    out, md = tmp_path / "res.json", tmp_path / "bench.md"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "store_scale.py"),
        "--sizes",
        "2000",
        "--base",
        "500",
        "--nq",
        "20",
        "--queries",
        "5",
        "--budget",
        "5",
        "--threads",
        "2",
        "--thread-seconds",
        "1",
        "--load-seconds",
        "5",
        "--inprocess-optimize-max",
        "0",
        "--data",
        str(data),
        "--cache",
        str(cache),
        "--json",
        str(out),
        "--append",
        str(md),
    ]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())["2000"]
    for engine in ("local", "edge"):
        r = res[engine]
        assert isinstance(r, dict), f"{engine}: {r}"
        assert r["build"]["upsert_rate"] > 0 and r["build"]["disk_mb"] > 0
        lat = r["serve"]["latency"]
        for kind in ("dense", "sparse", "hybrid"):
            for flt in ("none", "ready", "doc", "meta"):
                assert lat[f"{kind}/{flt}"]["n"] >= 1, (engine, kind, flt)
        assert r["serve"]["threads_2"]["n"] > 0 and r["serve"]["threads_2"]["errors"] == 0
        load = r["serve"]["under_load"]
        assert load["n"] > 0 and load["written"] > 0 and load["errors"] == 0
    assert res["edge"]["serve"]["maintenance"]["build"] == "swapped in"
    # Same data, same exact search: the same top-10 (random vectors have no ties in dense).
    for key in ("dense/none", "dense/ready"):
        edge, local = (res[e]["serve"]["latency"][key]["top10"] for e in ("edge", "local"))
        assert len(edge) == 5 and all(len(t) == 10 for t in edge)
        assert edge == local, key
    for key in ("sparse/none", "sparse/ready"):
        edge, local = (res[e]["serve"]["latency"][key]["top10"] for e in ("edge", "local"))
        assert all(set(a) & set(b) for a, b in zip(edge, local, strict=True)), key
    text = md.read_text()
    assert "### 2,000 points" in text and "| upsert (points/s) |" in text and "Ratios:" in text
