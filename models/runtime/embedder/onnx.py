"""The ONNX Runtime embedder: `tokenizers` for text, ORT for the encoder, pooling in numpy."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime import devices, int8
from models.runtime.embedder.base import EmbedderInfo, Pooling
from models.runtime.embedder.truncation import encode_truncated
from models.runtime.onnx_session import OrtSession, create_session
from models.runtime.registry import find_model
from models.runtime.settings import MLSettings

log = logging.getLogger(__name__)


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    """(n, seq, dim) hidden states and (n, seq) 0/1 mask of right-padded rows -> (n, dim)."""
    hidden = hidden.astype(np.float32, copy=False)
    if pooling == "cls":
        return np.ascontiguousarray(hidden[:, 0])
    if pooling == "last":
        last = np.maximum(mask.sum(axis=1) - 1, 0)
        return np.ascontiguousarray(hidden[np.arange(hidden.shape[0]), last])
    m = mask[..., None].astype(np.float32)
    summed = (hidden * m).sum(axis=1)
    return summed / np.maximum(m.sum(axis=1), 1e-9)


class OnnxEmbedder:
    """An `Embedder` on ONNX Runtime, from a model imported by `models.build.importer`.

    Thread-safe: the ORT session is, and the tokenizers are configured once and only read.
    """

    def __init__(
        self,
        model_dir: str | Path,
        metadata: dict[str, Any],
        settings: MLSettings,
        *,
        name: str,
        tag: str,
        gpu: bool | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        self.settings = settings
        self.max_length = int(metadata["max_length"])
        self.pooling: Pooling = metadata.get("pooling", "mean")
        self.lowercase = bool(metadata.get("lowercase", False))
        self.pad_id = int(metadata.get("pad_token_id", 0))
        self.output = metadata.get("onnx_output", "last_hidden_state")
        self.dimension = int(metadata["dimension"])

        self._tok_full = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tok_full.no_padding()
        self._tok_full.no_truncation()
        self._tok_trunc = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tok_trunc.no_padding()
        self._tok_trunc.enable_truncation(self.max_length)

        if gpu is None:
            gpu = devices.gpu_present()
        onnx_file, is_int8 = int8.select_embedder_onnx(model_dir, metadata, settings, gpu, tag)
        self.onnx_file = onnx_file
        self.ort: OrtSession = create_session(onnx_file, settings, gpu)
        self._background_ort: OrtSession | None = None
        self._background_lock = threading.Lock()
        self._inputs = list(self.ort.input_types)
        # What runs: "int8" (model.int8.onnx on CPU), "fp16" or "fp32".
        self.precision = "int8" if is_int8 else ("fp16" if self.ort.dtype == "float16" else "fp32")
        if is_int8:  # the integer kernels of this CPU against the float32 embeddings of the import
            try:
                result = int8.check(self._pooled, model_dir / int8.CHECK_FILE)
            except RuntimeError as err:
                raise RuntimeError(
                    f"embedder {tag}: {err} (int8 products can saturate on CPUs without "
                    "VNNI); set ML_API_EMBEDDER_PRECISION=fp32"
                ) from err
            log.info(
                "embedder %s: int8 (%s) on CPU, min cosine to float32 %.4f",
                tag,
                onnx_file.name,
                result.min_cosine,
            )
        self.info = EmbedderInfo(
            name=name,
            tag=tag,
            source=str(metadata.get("source", "")),
            revision=metadata.get("revision"),
            dimension=self.dimension,
            max_length=self.max_length,
            pooling=self.pooling,
            normalize=bool(metadata.get("normalize", False)),
            dtype=self.ort.dtype,
            device=self.ort.device,
            providers=self.ort.providers,
            backend="onnx",
            prompts=dict(metadata.get("prompts") or {}),
            default_prompt_name=metadata.get("default_prompt_name"),
        )

    @classmethod
    def from_store(cls, name: str, settings: MLSettings, gpu: bool | None = None) -> OnnxEmbedder:
        model = find_model(name)
        if model is None:
            raise LookupError(
                f"embedder {name!r} is not in the BentoML model store; import one with "
                f"`ragctl models import-defaults` or `ragctl models import-embedder SOURCE "
                f"--name {name}` (the store is $BENTOML_HOME/models, default ~/bentoml/models)"
            )
        meta = dict(model.info.metadata)
        if meta.get("kind") != "embedder":
            raise ValueError(f"{model.tag} is not an embedder (kind={meta.get('kind')!r})")
        return cls(model.path, meta, settings, name=name, tag=str(model.tag), gpu=gpu)

    # -- Embedder protocol -------------------------------------------------------------------------

    def _prepare(self, texts: list[str]) -> list[str]:
        # Like sentence-transformers: strip, and lowercase when the model says so.
        texts = [t.strip() for t in texts]
        return [t.lower() for t in texts] if self.lowercase else texts

    def tokenize(self, texts: list[str], truncate: bool = True) -> list[list[int]]:
        if truncate:  # only the part truncation keeps is tokenized (truncation.py)
            return encode_truncated(
                self._tok_full, self._tok_trunc, self._prepare(texts), self.max_length
            )
        return [e.ids for e in self._tok_full.encode_batch(self._prepare(texts))]

    def tokenizer_json(self) -> str:
        return self._tok_full.to_str()

    def _pooled(
        self, input_ids: np.ndarray, mask: np.ndarray, ort: OrtSession | None = None
    ) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        hidden = (ort or self.ort).run(self.output, feeds)
        return pool(hidden, mask, self.pooling).astype(np.float32, copy=False)

    def background_forward(self) -> Callable[[list[list[int]]], np.ndarray] | None:
        """A second CPU session of the same model file with one intra-op thread: ORT then runs
        each pass on the caller's thread, so the caller's (lowered) priority applies to all of
        it. Costs the model's weights once more in RAM. On a GPU there is no CPU work to lower
        the priority of, so None."""
        if self.ort.on_gpu:
            return None
        with self._background_lock:
            if self._background_ort is None:
                single = self.settings.model_copy(update={"intra_op_threads": 1})
                self._background_ort = create_session(self.onnx_file, single, gpu=False)
        session = self._background_ort
        return lambda batch: self._forward(batch, session)

    def forward(self, batch: list[list[int]]) -> np.ndarray:
        return self._forward(batch, self.ort)

    def _forward(self, batch: list[list[int]], ort: OrtSession) -> np.ndarray:
        n = len(batch)
        if n == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        width = max(1, max(len(ids) for ids in batch))
        input_ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = ids
            mask[i, : len(ids)] = 1
        return self._pooled(input_ids, mask, ort)
