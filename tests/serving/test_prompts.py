"""Prompts of asymmetric models: read from sentence-transformers' config at import (plus
`--prompt` at import), chosen by TEI's `prompt_name` and Cohere's `input_type` (real serve)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cohere
import httpx
import numpy as np
import pytest
from stack import NO_RERANKER, ROOT

PROMPTED = "tiny-prompted"


@pytest.fixture(scope="module")
def prompted_api(model_store: Path, start_ml_api, tmp_path_factory: pytest.TempPathFactory) -> str:
    import subprocess
    import sys

    import modelfactory

    src = modelfactory.make_tiny_embedder(tmp_path_factory.mktemp("prompted") / "emb", seed=3)
    (src / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}})
    )
    env = {**os.environ, "BENTOML_HOME": str(model_store), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ragctl.main", "models", "import-embedder", str(src)]
    cmd += ["--name", PROMPTED, "--prompt", "clustering=cluster: "]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    return start_ml_api(embedder=PROMPTED, reranker=NO_RERANKER).url


def embed(url: str, body: dict) -> np.ndarray:
    r = httpx.post(f"{url}/embed", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return np.array(r.json())


def test_prompts_are_stored_and_reported(prompted_api: str) -> None:
    emb = httpx.get(f"{prompted_api}/health", timeout=10).json()["models"]["embedder"]
    assert emb["prompts"] == {"query": "query: ", "passage": "passage: ", "clustering": "cluster: "}
    assert emb["default_prompt_name"] is None


def test_prompt_name_prepends_the_prompt(prompted_api: str) -> None:
    text = "what is a vector database"
    with_prompt = embed(prompted_api, {"inputs": [text], "prompt_name": "query"})
    by_hand = embed(prompted_api, {"inputs": [f"query: {text}"]})
    plain = embed(prompted_api, {"inputs": [text]})
    assert np.abs(with_prompt - by_hand).max() < 1e-6
    assert np.abs(with_prompt - plain).max() > 1e-3
    r = httpx.post(
        f"{prompted_api}/embed", json={"inputs": [text], "prompt_name": "nope"}, timeout=30
    )
    assert r.status_code == 422 and "`query`" in r.json()["error"], r.text
    toks = httpx.post(
        f"{prompted_api}/tokenize", json={"inputs": "x", "prompt_name": "query"}, timeout=30
    ).json()[0]
    assert [t["text"] for t in toks if not t["special"]][:2] == ["query", ":"]


def test_cohere_input_type_selects_the_prompt(prompted_api: str) -> None:
    co = cohere.ClientV2(api_key="unused", base_url=prompted_api)
    text = "Qdrant stores vectors."
    for input_type, prefix in (("search_query", "query: "), ("search_document", "passage: ")):
        res = co.embed(model=PROMPTED, texts=[text], input_type=input_type)
        expected = embed(prompted_api, {"inputs": [prefix + text]})
        assert np.abs(np.array(res.embeddings.float_) - expected).max() < 1e-6, input_type
