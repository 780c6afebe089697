"""Cohere's `/v2/embed` (`cohere.ClientV2.embed`): texts in, embeddings by type out.

The quantized types follow Cohere's documentation and sentence-transformers'
`quantize_embeddings`, from the L2-normalized float vector `v`:
- `int8`: round(v * 127) clipped to [-128, 127]; `uint8`: round((v + 1) * 127.5) clipped to
  [0, 255]. The range is fixed to that of a unit vector's components, [-1, 1], so a vector's
  code never depends on the other texts of its request (Cohere's calibrated ranges are not
  published).
- `ubinary`: one bit per dimension (1 where v > 0), packed 8 per byte, big-endian bit order
  (numpy.packbits), as uint8; `binary`: the same bytes minus 128, as int8.
- `base64`: base64 of the little-endian float32 vector.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import numpy as np

from serving.engine import Embeddings, Engine
from serving.errors import APIError

EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")


def quantize(vectors: np.ndarray, kind: str) -> Any:
    v = vectors.astype(np.float32, copy=False)
    if kind == "float":
        return v
    if kind == "int8":
        return np.clip(np.rint(v * 127), -128, 127).astype(np.int8)
    if kind == "uint8":
        return np.clip(np.rint((v + 1) * 127.5), 0, 255).astype(np.uint8)
    if kind == "ubinary":
        return np.packbits(v > 0, axis=1)
    if kind == "binary":
        return (np.packbits(v > 0, axis=1).astype(np.int16) - 128).astype(np.int8)
    if kind == "base64":
        le = v.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode() for row in le]
    raise ValueError(kind)


def check_options(
    engine: Engine,
    *,
    input_type: str | None,
    truncate: str,
    output_dimension: int | None,
    max_tokens: int | None,
) -> None:
    """Cohere options this server cannot honour are refused, naming the field."""
    dim = engine.embedder.info.dimension
    max_len = engine.embedder.info.max_length
    if input_type == "image":
        raise APIError(422, "input_type `image`: this server embeds text only", param="input_type")
    if truncate.upper() == "START":
        raise APIError(
            422,
            "truncate `START` is not supported: send `END` (cut the end of long texts) or `NONE`",
            param="truncate",
        )
    if output_dimension is not None and output_dimension != dim:
        raise APIError(
            422,
            f"output_dimension={output_dimension} is not available: this model has {dim} "
            "dimensions and was not trained for shortened (Matryoshka) vectors",
            param="output_dimension",
        )
    if max_tokens is not None and max_tokens < max_len:
        raise APIError(
            422,
            f"max_tokens={max_tokens} is not supported below the model's limit of {max_len} "
            "tokens (texts are cut there when truncate is `END`)",
            param="max_tokens",
        )


def embed_by_type(result: Embeddings, texts: list[str], types: list[str]) -> dict[str, Any]:
    tokens = sum(result.token_counts)
    return {
        "id": str(uuid.uuid4()),
        "response_type": "embeddings_by_type",
        "embeddings": {t: quantize(result.vectors, t) for t in dict.fromkeys(types)},
        "texts": texts,
        "meta": {
            "api_version": {"version": "2"},
            "billed_units": {"input_tokens": tokens},
        },
    }
