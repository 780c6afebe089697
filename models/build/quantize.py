"""Optional int8 embedder for CPU: ONNX Runtime dynamic quantization of model.onnx, verified.

`ragctl models import-embedder SOURCE --int8` (or `import_embedder(..., int8=True)`) writes,
next to model.onnx in the same BentoML model folder:

    model.int8.onnx          weights int8 per output channel (QInt8, symmetric), activations
                             quantized to uint8 at run time (MatMul, Gather; ORT fuses them into
                             DynamicQuantizeMatMul / MatMulIntegerToFloat on CPU)
    model.int8.check.npz     a fixed batch of real sentences (token ids, mask) and their float32
                             pooled embeddings

The import fails when the int8 model's pooled embeddings of that batch are off from float32
(min cosine < MIN_COSINE). Choosing the file and re-checking it on the serving CPU at start-up
is the runtime's part: `models.runtime.int8`.

Choice measured on all-MiniLM-L6-v2 (2-core AMD EPYC with AVX512-VNNI, 256 SciFact abstracts):
QInt8 per-channel ~1.9x the float32 texts/s at min/mean cosine 0.990 / 0.994; QInt8 per-tensor
is as fast but off (min 0.894); QUInt8 is ~1.3x with no better cosine.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime import devices
from models.runtime.embedder.onnx import pool
from models.runtime.int8 import CHECK_FILE, INT8_FILE, Forward, check

log = logging.getLogger(__name__)

WEIGHT_TYPE = "QInt8"
PER_CHANNEL = True

# Real text of several kinds and lengths (the last one is truncated at max_length).
SAMPLE_TEXTS = [
    "hello",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "How do I reset my password if I no longer have access to my email account?",
    "Qdrant is a vector database written in Rust; it stores dense and sparse vectors.",
    "The mitochondria produce most of the chemical energy needed by the cell.",
    "Aspirin reduces the risk of heart attack in patients with coronary artery disease.",
    "def embed(texts): return model.encode(texts, normalize_embeddings=True)",
    "SELECT name, count(*) FROM orders GROUP BY name HAVING count(*) > 10;",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "La tour Eiffel a été construite pour l'Exposition universelle de 1889.",
    "東京は日本の首都です。",
    "Invoice #2024-0117: 3 items, total 1,249.90 EUR, due 2024-02-15.",
    "Results: the treatment group improved by 12.4% (95% CI 8.1-16.7, p < 0.001).",
    "Retrieval-augmented generation combines a search step with a language model. "
    "Documents are split into chunks, embedded, and the chunks closest to the question "
    "are given to the model as context.",
    "A much longer passage about retrieval, embeddings and reranking. " * 40,
]


# -- quantization and its check ---------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # quantize_dynamic logs "Please consider to run pre-processing" through the root logger.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize(fp32_path: str | Path, out: str | Path) -> None:
    """Dynamic int8 quantization of `fp32_path` to `out` (+ `out.data` for huge models)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path, out = Path(fp32_path), Path(out)
    data = fp32_path.with_name(fp32_path.name + ".data")
    size = fp32_path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    with _quiet():
        quantize_dynamic(
            fp32_path,
            out,
            weight_type=getattr(QuantType, WEIGHT_TYPE),
            per_channel=PER_CHANNEL,
            # int8 weights are ~1/4 of float32: only past ~6 GB of float32 do they pass 1.5 GB
            use_external_data_format=size / 4 > 1_500_000_000,
        )


def sample_batch(
    tokenizer_json: Path, max_length: int, pad_id: int, lowercase: bool
) -> tuple[np.ndarray, np.ndarray]:
    """SAMPLE_TEXTS as the runtime tokenizes them: (input_ids, attention_mask), right-padded."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(max_length)
    texts = [t.strip().lower() if lowercase else t.strip() for t in SAMPLE_TEXTS]
    ids = [e.ids for e in tok.encode_batch(texts)]
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return input_ids, mask


def cpu_forward(onnx_path: Path, metadata: dict[str, Any]) -> Forward:
    """Pooled, not normalized, embeddings from a plain CPU session on `onnx_path`."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), so, providers=[devices.CPU_EP])
    names = [i.name for i in session.get_inputs()]
    output = metadata.get("onnx_output", "last_hidden_state")
    pooling = metadata.get("pooling", "mean")

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run([output], {n: feeds[n] for n in names})[0]
        return pool(hidden, mask, pooling)

    return forward


def quantize_embedder(
    model_dir: Path, metadata: dict[str, Any], min_cosine: float | None = None
) -> dict[str, Any]:
    """Write model.int8.onnx and model.int8.check.npz into `model_dir` (an embedder folder
    holding model.onnx and tokenizer.json) and verify them. Returns the metadata to add:
    int8_onnx, int8_weight_type, int8_per_channel, int8_min_cosine, int8_mean_cosine,
    int8_seconds. Raises RuntimeError when the int8 model is off (min cosine < min_cosine,
    default MIN_COSINE)."""
    start = time.perf_counter()
    fp32_path, int8_path = model_dir / "model.onnx", model_dir / INT8_FILE
    quantize(fp32_path, int8_path)
    ids, mask = sample_batch(
        model_dir / "tokenizer.json",
        int(metadata["max_length"]),
        int(metadata.get("pad_token_id", 0)),
        bool(metadata.get("lowercase", False)),
    )
    reference = cpu_forward(fp32_path, metadata)(ids, mask).astype(np.float32)
    np.savez(model_dir / CHECK_FILE, input_ids=ids, attention_mask=mask, reference=reference)
    try:
        result = check(cpu_forward(int8_path, metadata), model_dir / CHECK_FILE, min_cosine)
    except RuntimeError as err:
        raise RuntimeError(f"int8 quantization of {metadata.get('source')} failed: {err}") from err
    return {
        "int8_onnx": INT8_FILE,
        "int8_weight_type": WEIGHT_TYPE,
        "int8_per_channel": PER_CHANNEL,
        "int8_min_cosine": round(result.min_cosine, 5),
        "int8_mean_cosine": round(result.mean_cosine, 5),
        "int8_seconds": round(time.perf_counter() - start, 2),
    }
