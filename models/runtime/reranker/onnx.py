"""The ONNX Runtime cross-encoder: the stored model.onnx (output logits), FlagReranker's
tokenization re-done with `tokenizers`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.runtime.onnx_session import OrtSession, create_session
from models.runtime.reranker.base import EncodedPair, RerankerInfo
from models.runtime.reranker.pairs import PairTokenizer
from models.runtime.settings import MLSettings


class OnnxCrossEncoder:
    """A `Reranker` on ONNX Runtime. Thread-safe (ORT sessions are; the tokenizer is only read)."""

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
        model_dir = Path(model_dir)
        if not (model_dir / "model.onnx").is_file():
            raise FileNotFoundError(
                f"{tag} has no model.onnx (imported with --no-onnx?); re-import it, or set "
                "ML_API_RERANKER_BACKEND=flag"
            )
        if int(metadata.get("num_labels", 1)) != 1:
            raise ValueError(f"{tag} has {metadata.get('num_labels')} labels; a reranker has 1")
        self.settings = settings
        self.max_length = min(settings.rerank_max_length, int(metadata["max_length"]))
        self.pad_id = int(metadata.get("pad_token_id", 0))
        self.output = metadata.get("onnx_output", "logits")
        self.pairs = PairTokenizer(model_dir / "tokenizer.json", self.max_length)
        self.ort: OrtSession = create_session(model_dir / "model.onnx", settings, gpu)
        self._inputs = list(self.ort.input_types)
        self.info = RerankerInfo(
            name=name,
            tag=tag,
            source=str(metadata.get("source", "")),
            revision=metadata.get("revision"),
            max_length=self.max_length,
            dtype=self.ort.dtype,
            device=self.ort.device,
            providers=self.ort.providers,
            backend="onnx",
        )

    def cut_passages(self, texts: list[str], max_tokens: int) -> list[str]:
        return self.pairs.cut(texts, max_tokens)

    def encode(self, pairs: list[tuple[str, str]]) -> list[EncodedPair]:
        return self.pairs.encode(pairs)

    def forward(self, batch: list[EncodedPair]) -> np.ndarray:
        n = len(batch)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        width = max(len(e.input_ids) for e in batch)
        input_ids = np.full((n, width), self.pad_id, dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, e in enumerate(batch):
            input_ids[i, : len(e.input_ids)] = e.input_ids
            if e.token_type_ids is not None:
                types[i, : len(e.token_type_ids)] = e.token_type_ids
            mask[i, : len(e.input_ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = types
        logits = self.ort.run(self.output, feeds)
        return logits.reshape(n, -1)[:, 0].astype(np.float32)
