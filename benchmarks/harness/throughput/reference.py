"""In-process ONNX Runtime on the store's own model.onnx: the reference "ORT best" and the
load probe."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmarks.harness.throughput.store import StoredModel

# -- in-process contenders ---------------------------------------------------------------------


class OrtReference:
    """Plain ONNX Runtime on the store's model.onnx: tokenize (fast tokenizer, truncated), sort by
    length, pad each sub-batch to its longest, run, mean-pool, L2-normalise."""

    def __init__(self, model: StoredModel, threads: int, device: str = "cpu") -> None:
        from tokenizers import Tokenizer

        from models.runtime.onnx_session import create_session
        from models.runtime.settings import MLSettings

        meta = model.meta
        self.max_length = int(meta["max_length"])
        self.pad_id = int(meta.get("pad_token_id", 0))
        self.lowercase = bool(meta.get("lowercase", False))
        self.output = meta.get("onnx_output", "last_hidden_state")
        self.tok = Tokenizer.from_file(str(model.path / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_length)
        # The session factory the ml-api uses (full graph optimisation, intra-op threads =
        # cores; on CUDA: fp16 with float32 inputs/outputs), so both run the same graph.
        settings = MLSettings(device=device, intra_op_threads=threads, on_cuda_unavailable="fail")
        self.session = create_session(model.path / "model.onnx", settings, gpu=device == "cuda")
        self.inputs = list(self.session.input_types)
        self.padded_tokens = 0

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        texts = [t.strip() for t in texts]
        if self.lowercase:
            texts = [t.lower() for t in texts]
        return [e.ids for e in self.tok.encode_batch(texts)]

    def forward(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, x in enumerate(batch):
            ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        self.padded_tokens += ids.size
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(self.output, feeds).astype(np.float32, copy=False)
        m = mask[..., None].astype(np.float32)
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        ids = self.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros((len(ids), 0), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            vecs = self.forward([ids[i] for i in idx])
            if out.shape[1] == 0:
                out = np.zeros((len(ids), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
