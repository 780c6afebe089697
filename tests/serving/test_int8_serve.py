"""`bentoml serve` with ML_API_EMBEDDER_PRECISION=int8 (the int8 embedder itself: tests/models)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from stack import NO_RERANKER, ROOT, TINY_EMBEDDER

TINY_INT8 = "tiny-embedder-int8"
TEXTS = ["What is the capital of France?", "Paris is the capital of France."]


def test_info_reports_fp32_by_default(ml_api: str) -> None:
    info = httpx.get(f"{ml_api}/info", timeout=10).json()
    assert info["models"]["embedder"]["precision"] == "fp32"


def test_int8_served(start_ml_api, model_store: Path) -> None:
    from bentoml._internal.models.model import ModelStore

    # the tiny embedder's folder that the session store was imported from, again with --int8
    stored = ModelStore(str(model_store / "models")).get(TINY_EMBEDDER)
    source = stored.info.metadata["source"]
    env = {**os.environ, "BENTOML_HOME": str(model_store), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ragctl.main", "models", "import-embedder", source]
    proc = subprocess.run(
        [*cmd, "--name", TINY_INT8, "--int8"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    int8 = start_ml_api(
        embedder=TINY_INT8,
        reranker=NO_RERANKER,
        ml_api_embedder_precision="int8",
        ml_api_device="cpu",
    )
    info = httpx.get(f"{int8.url}/info", timeout=10).json()
    assert info["models"]["embedder"]["precision"] == "int8"
    assert info["models"]["embedder"]["name"] == TINY_INT8
    r = httpx.post(f"{int8.url}/embed", json={"inputs": TEXTS}, timeout=30)
    assert r.status_code == 200, r.text
    got = np.array(r.json())
    assert got.shape == (2, 32)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
