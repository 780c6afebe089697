"""The int8 embedder at run time: which ONNX file to load, and its check on this CPU.

`models.build.quantize` writes model.int8.onnx and model.int8.check.npz at import; the
runtime (`ML_API_EMBEDDER_PRECISION=int8`) runs the same check again at start-up, on the CPU
that serves: integer kernels differ between CPUs (without VNNI, u8 x s8 products can
saturate), so a model verified on one machine is re-verified on the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime import devices
from models.runtime.registry import DEFAULT_EMBEDDER_SOURCE
from models.runtime.settings import MLSettings

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
CHECK_FILE = "model.int8.check.npz"
# all-MiniLM-L6-v2 gives min 0.982 / mean 0.993 on the sample texts: one-word texts are the
# worst (0.98 for "hello"; activations are quantized per batch, so it moves with the batch too).
# A broken int8 model (per-tensor weights; saturating kernels) falls to ~0.9 and below.
MIN_COSINE = 0.97

Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ids, mask) -> pooled (n, dim)


@dataclass(frozen=True)
class Int8Check:
    min_cosine: float
    mean_cosine: float


def reimport_command(name: str, source: str) -> str:
    if (name, source) == ("embedder", DEFAULT_EMBEDDER_SOURCE):
        return "ragctl models import-defaults --int8"
    return f"ragctl models import-embedder {source} --name {name} --int8"


def select_embedder_onnx(
    model_dir: str | Path, metadata: dict[str, Any], settings: MLSettings, gpu: bool, tag: str
) -> tuple[Path, bool]:
    """(ONNX file to load, whether it is the int8 one) for `settings.embedder_precision`.

    int8 is for CPU only: when the session will be on CUDA, a warning and model.onnx (float16
    or float32 as usual). int8 asked for on a model imported without it raises with the
    command that re-imports it.
    """
    model_dir = Path(model_dir)
    fp32 = model_dir / "model.onnx"
    if settings.embedder_precision != "int8":
        return fp32, False
    if devices.wants_cuda(settings.device, gpu):
        log.warning(
            "ML_API_EMBEDDER_PRECISION=int8 applies on CPU only; the embedder %s runs on CUDA "
            "in %s (set ML_API_DEVICE=cpu for int8 on CPU)",
            tag,
            "float16" if settings.fp16 else "float32",
        )
        return fp32, False
    name = tag.split(":", 1)[0]
    file = metadata.get("int8_onnx")
    if not file or not (model_dir / file).is_file() or not (model_dir / CHECK_FILE).is_file():
        raise RuntimeError(
            f"ML_API_EMBEDDER_PRECISION=int8, but the embedder {tag} was imported without an "
            f"int8 model ({INT8_FILE}). Re-import it with `"
            f"{reimport_command(name, str(metadata.get('source', 'SOURCE')))}`, or set "
            "ML_API_EMBEDDER_PRECISION=fp32."
        )
    return model_dir / file, True


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def check(forward: Forward, check_file: Path, min_cosine: float | None = None) -> Int8Check:
    """Cosine of `forward` on the stored sample batch against its stored float32 embeddings;
    RuntimeError when the lowest is under `min_cosine` (default MIN_COSINE)."""
    if min_cosine is None:
        min_cosine = MIN_COSINE
    with np.load(check_file) as data:
        ids, mask, ref = data["input_ids"], data["attention_mask"], data["reference"]
    cos = cosines(forward(ids, mask), ref)
    result = Int8Check(float(cos.min()), float(cos.mean()))
    if not np.isfinite(result.min_cosine) or result.min_cosine < min_cosine:
        raise RuntimeError(
            f"the int8 embedder is off from float32 on this CPU: min cosine "
            f"{result.min_cosine:.4f} < {min_cosine} over {len(cos)} sample texts "
            f"(mean {result.mean_cosine:.4f})"
        )
    return result
