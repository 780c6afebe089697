"""Imports into the BentoML model store (real exports, real store), listing, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bentoml
import pytest
from models_support import TINY_CLS, TINY_MEAN, TINY_RERANKER, Defaults, Sources

from models.build import hub, importer
from models.runtime import registry

ROOT = Path(__file__).resolve().parents[2]


def _files(tag: str) -> set[str]:
    return {p.name for p in Path(bentoml.models.get(tag).path).iterdir()}


def test_embedder_import_from_local_folder(tiny_store: dict[str, str], sources: Sources) -> None:
    model = bentoml.models.get(tiny_store[TINY_MEAN])
    meta = model.info.metadata
    assert meta["kind"] == "embedder"
    assert meta["source"] == str(sources.mean.resolve())
    assert meta["revision"].startswith("sha256:")
    assert meta["dimension"] == 32
    assert meta["max_length"] == 128  # sentence_bert_config.json max_seq_length
    assert meta["pooling"] == "mean"
    assert meta["normalize"] is True
    assert meta["lowercase"] is False
    assert meta["pad_token_id"] == 0
    assert meta["onnx_inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert meta["onnx_output"] == "last_hidden_state"
    assert meta["export_max_abs_diff"] < 1e-4
    assert model.info.labels["kind"] == "embedder"
    files = _files(tiny_store[TINY_MEAN])
    assert {"model.onnx", "tokenizer.json", "tokenizer_config.json", "config.json"} <= files
    assert "model.onnx.data" not in files  # one file for small models
    assert "model.safetensors" not in files  # the ONNX export replaces the weights


def test_pooling_and_normalize_from_the_sentence_transformers_layout(
    tiny_store: dict[str, str],
) -> None:
    meta = bentoml.models.get(tiny_store[TINY_CLS]).info.metadata
    assert meta["pooling"] == "cls" and meta["normalize"] is False


def test_reranker_import_from_local_folder(tiny_store: dict[str, str], sources: Sources) -> None:
    meta = bentoml.models.get(tiny_store[TINY_RERANKER]).info.metadata
    assert meta["kind"] == "reranker"
    assert meta["source"] == str(sources.cross_encoder.resolve())
    assert meta["revision"].startswith("sha256:")
    assert meta["max_length"] == 512
    assert meta["num_labels"] == 1
    assert meta["onnx"] is True and meta["onnx_output"] == "logits"
    assert meta["export_max_abs_diff"] < 1e-4
    files = _files(tiny_store[TINY_RERANKER])
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "model.onnx",
    } <= files


def test_import_is_idempotent_unless_forced(
    tiny_store: dict[str, str], sources: Sources, empty_store: Path
) -> None:
    first = importer.import_reranker(str(sources.cross_encoder), "rr", onnx=False)
    assert importer.import_reranker(str(sources.cross_encoder), "rr", onnx=False) == first
    forced = importer.import_reranker(str(sources.cross_encoder), "rr", onnx=False, force=True)
    assert forced != first
    assert len(bentoml.models.list("rr")) == 2
    assert str(registry.find_model("rr").tag) == forced  # latest
    meta = registry.find_model("rr").info.metadata
    assert meta["onnx"] is False and "model.onnx" not in _files(forced)


def test_plain_transformers_folder(sources: Sources, tmp_path: Path, empty_store: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in sources.mean.iterdir():  # drop the sentence-transformers files
        if f.is_file() and f.name not in ("modules.json", "sentence_bert_config.json"):
            shutil.copy2(f, plain / f.name)
    tag = importer.import_embedder(str(plain), "plain", pooling="cls")
    meta = bentoml.models.get(tag).info.metadata
    assert meta["pooling"] == "cls"  # as asked; mean by default for plain models
    assert meta["normalize"] is False
    assert meta["max_length"] == 512  # tokenizer model_max_length, capped by positions


def test_bad_sources(sources: Sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="not a sequence-classification"):
        importer.import_reranker(str(sources.mean), "nope")
    with pytest.raises(ValueError, match="neither a folder nor"):
        importer.import_embedder("/no/such/folder", "nope")
    with pytest.raises(ValueError, match=r"no config\.json"):
        importer.import_embedder(str(tmp_path), "nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        importer.import_reranker("someone/not-cached-anywhere", "nope")
    assert registry.find_model("nope") is None


def test_list_and_find(tiny_store: dict[str, str], defaults: Defaults) -> None:
    rows = {r["name"]: r for r in importer.list_models()}
    assert {TINY_MEAN, TINY_RERANKER, "embedder"} <= set(rows)
    assert rows[TINY_MEAN]["kind"] == "embedder" and rows[TINY_MEAN]["dimension"] == 32
    assert rows[TINY_RERANKER]["kind"] == "reranker"
    assert rows["embedder"]["source"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert rows["embedder"]["size_bytes"] > 80_000_000
    assert str(registry.find_model(TINY_MEAN).tag) == tiny_store[TINY_MEAN]
    assert registry.find_model("absent") is None


def test_import_defaults_offline_and_idempotent(defaults: Defaults) -> None:
    # the session fixture ran import_defaults once, offline
    meta = bentoml.models.get("embedder").info.metadata
    assert meta["source"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["dimension"] == 384 and meta["max_length"] == 256
    assert meta["pooling"] == "mean" and meta["normalize"] is True
    assert defaults.tags["reranker"] is None
    skipped = [line for line in defaults.lines if line.startswith("reranker")]
    assert len(skipped) == 1
    assert "skipped" in skipped[0] and "HF_HUB_OFFLINE" in skipped[0]
    assert "ragctl models import-reranker" in skipped[0]

    lines: list[str] = []
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        tags = importer.import_defaults(echo=lines.append)
    finally:
        del os.environ["HF_HUB_OFFLINE"]
    assert tags["embedder"] == defaults.tags["embedder"]
    assert len(bentoml.models.list("embedder")) == 1
    assert "already in the store" in lines[0]
    assert registry.find_model("reranker") is None


def test_hub_reachability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_reachable() == (False, "HF_HUB_OFFLINE is set")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import socket

    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    ok, why = hub.hub_reachable(timeout=3)
    assert not ok and "unreachable" in why
    assert time.monotonic() - start < 3.5


def _ragctl(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("ragctl")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "ragctl.main"]
    env = {**os.environ, "BENTOML_HOME": str(home), "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(
        [*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_list(tiny_store: dict[str, str], defaults: Defaults, bentoml_home: Path) -> None:
    proc = _ragctl("models", "list", home=bentoml_home)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for tag in (*tiny_store.values(), defaults.tags["embedder"]):
        assert tag in out
    assert "sentence-transformers/all-MiniLM-L6-v2" in out
    assert "384 / 256" in out and "reranker" in out


def test_cli_list_empty_and_errors(tmp_path: Path) -> None:
    proc = _ragctl("models", "list", home=tmp_path)
    assert proc.returncode == 0 and "No models" in proc.stdout
    proc = _ragctl("models", "import-embedder", str(tmp_path / "missing"), home=tmp_path)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "neither a folder nor" in proc.stderr


def test_pooling_config_formats() -> None:
    cfg = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    assert importer._pooling_mode(cfg | {"include_prompt": True}) == "cls"
    assert importer._pooling_mode({"pooling_mode": "lasttoken"}) == "last"
    assert importer._pooling_mode({"pooling_mode": "mean"}) == "mean"
    with pytest.raises(ValueError, match="not supported"):
        importer._pooling_mode({"pooling_mode_max_tokens": True})


def test_unsupported_sentence_transformers_module(tmp_path: Path) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match=r"models\.Dense is not supported"):
        importer.import_embedder(str(tmp_path), "nope")
