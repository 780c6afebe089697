"""The FlagEmbedding cross-encoder: `FlagReranker` (PyTorch) loaded from the store folder.

FlagReranker is built with one explicit device (FlagEmbedding 1.4 starts a multi-process pool
when it sees several) and offline. Its model and tokenizer are then driven here with its own
tokenization helpers, one batch (planned by the ml-api's batcher) per `forward`:
`compute_score` would plan its own batches, run the first one twice (a batch-size probe) and
re-move the model on every call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime import devices
from models.runtime.reranker.base import EncodedPair, RerankerInfo
from models.runtime.reranker.pairs import cut_texts
from models.runtime.settings import MLSettings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """transformers/huggingface_hub offline while loading: a local folder never needs the hub,
    and a missing optional file must not turn into a network request."""
    import huggingface_hub.constants as hf_constants
    import transformers.utils.hub as tf_hub

    saved = hf_constants.HF_HUB_OFFLINE, getattr(tf_hub, "_is_offline_mode", None)
    hf_constants.HF_HUB_OFFLINE = True
    tf_hub._is_offline_mode = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved[0]
        tf_hub._is_offline_mode = saved[1]


class FlagCrossEncoder:
    """A `Reranker` on FlagEmbedding's FlagReranker. Thread-safe: the model runs under a lock
    (one forward at a time, torch uses all its threads), the tokenizer under another (a
    transformers fast tokenizer re-configures truncation on each call)."""

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
        import torch

        with hub_offline():
            from FlagEmbedding import FlagReranker

        if int(metadata.get("num_labels", 1)) != 1:
            raise ValueError(f"{tag} has {metadata.get('num_labels')} labels; a reranker has 1")
        if gpu is None:
            gpu = devices.gpu_present()
        self.device = devices.torch_device(settings.device, gpu, settings.on_cuda_unavailable)
        on_gpu = self.device.startswith("cuda")
        fp16 = on_gpu and settings.fp16
        self.settings = settings
        self.max_length = min(settings.rerank_max_length, int(metadata["max_length"]))
        with hub_offline():
            self.flag = FlagReranker(
                str(model_dir),
                use_fp16=fp16,
                devices=self.device,
                max_length=self.max_length,
                normalize=False,
                batch_size=settings.batch_item_cap(on_gpu),
            )
        if not on_gpu:
            torch.set_num_threads(settings.intra_op_threads)
        model = self.flag.model
        if fp16:
            model.half()
        self.model = model.to(self.device).eval()
        self.tokenizer = self.flag.tokenizer
        # Silence transformers' one-time advice (pad after encode; over-long inputs, which
        # `encode` measures on purpose and truncation handles).
        for key in (
            "Asking-to-pad-a-fast-tokenizer",
            "sequence-length-is-longer-than-the-specified-maximum",
        ):
            self.tokenizer.deprecation_warnings[key] = True
        self.query_max_length = self.flag.query_max_length or self.max_length * 3 // 4
        self._num_special = self.tokenizer.num_special_tokens_to_add(pair=True)
        # A private copy of the Rust tokenizer for offsets: the shared one is reconfigured per call.
        from tokenizers import Tokenizer

        self._offsets_tok = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        self._offsets_tok.no_truncation()
        self._offsets_tok.no_padding()
        self._model_lock = threading.Lock()
        self._tok_lock = threading.Lock()
        self.info = RerankerInfo(
            name=name,
            tag=tag,
            source=str(metadata.get("source", "")),
            revision=metadata.get("revision"),
            max_length=self.max_length,
            dtype="float16" if fp16 else "float32",
            device=self.device,
            providers=[],
            backend="flag",
        )

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:  # transformers' tokenizers reject an empty batch
            return []
        unique = list(dict.fromkeys(texts))  # usually one query for every pair
        with self._tok_lock:
            ids = self.tokenizer(unique, add_special_tokens=False, return_tensors=None)["input_ids"]
        by_text = dict(zip(unique, ids, strict=True))
        return [by_text[t] for t in texts]

    def cut_passages(self, texts: list[str], max_tokens: int) -> list[str]:
        return cut_texts(self._offsets_tok, texts, max_tokens)

    def encode(self, pairs: list[tuple[str, str]]) -> list[EncodedPair]:
        """FlagReranker.compute_score_single_gpu's tokenization, pair by pair, from one
        untruncated tokenization (its truncation of a single text at max_length keeps the
        first, or with truncation_side "left" the last, max_length tokens: `_cut`)."""
        from FlagEmbedding.utils.tokenizer_compat import prepare_for_model_compat

        left = self.tokenizer.truncation_side == "left"

        def _cut(ids: list[int], n: int) -> list[int]:
            return ids[-n:] if left and len(ids) > n else ids[:n]

        qs = self._ids([q for q, _ in pairs])
        ps = self._ids([p for _, p in pairs])
        out = []
        with self._tok_lock:
            for q, p in zip(qs, ps, strict=True):
                item = prepare_for_model_compat(
                    self.tokenizer,
                    _cut(q, self.query_max_length),
                    _cut(p, self.max_length),
                    truncation="only_second",
                    max_length=self.max_length,
                    padding=False,
                )
                length = len(q) + len(p) + self._num_special
                out.append(EncodedPair(item["input_ids"], item.get("token_type_ids"), length))
        return out

    def forward(self, batch: list[EncodedPair]) -> np.ndarray:
        import torch
        from FlagEmbedding.utils.tokenizer_compat import pad_with_compat

        if not batch:
            return np.zeros(0, dtype=np.float32)
        items: list[dict[str, list[int]]] = []
        for e in batch:
            item = {"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids)}
            if e.token_type_ids is not None:
                item["token_type_ids"] = e.token_type_ids
            items.append(item)
        with self._tok_lock:
            padded = pad_with_compat(self.tokenizer, items, padding=True, return_tensors="pt")
        padded = padded.to(self.device)
        with self._model_lock, torch.inference_mode():
            logits = self.model(**padded, return_dict=True).logits
        return logits.reshape(len(batch), -1)[:, 0].float().cpu().numpy()
