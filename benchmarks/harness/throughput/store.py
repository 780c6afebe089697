"""The model store the contenders share (MiniLM, the tiny and the mid-size cross-encoder) and
the device they run on."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# -- machine ------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """ "cuda" or "cpu": `auto` takes the GPU when the NVIDIA driver reports one."""
    from models.runtime import devices

    if device == "auto":
        return "cuda" if devices.gpu_present() else "cpu"
    return device


# -- the model store ---------------------------------------------------------------------------


def make_mid_cross_encoder(folder: Path, minilm: Path, seed: int = 0) -> Path:
    """A randomly initialised 6-layer, 384-hidden BERT cross-encoder (num_labels=1) with the
    MiniLM tokenizer: MiniLM-L6's shape, so its cost is that of a real small reranker."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    if (folder / "model.safetensors").is_file() and (folder / ".complete").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = json.loads((minilm / "config.json").read_text())["vocab_size"]
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        num_labels=1,
    )
    config.architectures = ["BertForSequenceClassification"]
    BertForSequenceClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(minilm / name, folder / name)
    (folder / ".complete").touch()
    return folder


@dataclass
class StoredModel:
    name: str
    path: Path
    meta: dict[str, Any]


def stored(name: str) -> StoredModel:
    from models.runtime.registry import find_model, model_path

    model = find_model(name)
    if model is None:
        raise LookupError(f"{name} is not in the store")
    return StoredModel(name, Path(model_path(model)), dict(model.info.metadata))
