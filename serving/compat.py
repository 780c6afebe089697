"""Response shapes of the APIs we are compatible with (TEI, OpenAI, Cohere, Jina)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from models.runtime.embedder.base import EmbedderInfo
from models.runtime.reranker.base import RerankerInfo
from serving.batcher import BatchStats
from serving.engine import Embeddings, Engine, Scores, sigmoid
from serving.errors import APIError
from serving.schemas import DocumentText

__all__ = ["DocumentText"]

_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def timing_headers(stats: BatchStats, total_ms: float | None = None) -> dict[str, str]:
    total = total_ms if total_ms is not None else stats.queue_ms + stats.inference_ms
    return {
        "x-queue-time": f"{stats.queue_ms:.2f}",
        "x-inference-time": f"{stats.inference_ms:.2f}",
        "x-total-time": f"{total:.2f}",
        "x-compute-tokens": str(stats.tokens),
    }


def json_response(body: Any, stats: BatchStats) -> Response:
    return Response(
        orjson.dumps(body, option=_JSON_OPTS),
        media_type="application/json",
        headers=timing_headers(stats),
    )


def check_model(requested: str | None, info: EmbedderInfo | RerankerInfo, kind: str) -> str:
    """Accept the store name, the full tag, or the source id; answer with the store name."""
    if requested is None or requested in (info.name, info.tag, info.source):
        return info.name
    raise APIError(
        404,
        f"The model `{requested}` does not exist; this server's {kind} is "
        f"`{info.name}` (source `{info.source}`)",
        param="model",
        code="model_not_found",
    )


# -- TEI ---------------------------------------------------------------------------------------


def tei_rerank(
    scores: Scores, texts: list[str], *, raw_scores: bool, return_text: bool
) -> list[dict[str, Any]]:
    logits = np.asarray(scores.logits, dtype=np.float64)
    values = logits if raw_scores else sigmoid(logits)
    order = np.argsort(-values, kind="stable")
    hits = []
    for i in order:
        hit: dict[str, Any] = {"index": int(i), "score": float(values[i])}
        if return_text:
            hit["text"] = texts[i]
        hits.append(hit)
    return hits


# -- OpenAI ------------------------------------------------------------------------------------


async def openai_embed(engine: Engine, input: Any, dimensions: int | None) -> Embeddings:
    dim = engine.embedder.info.dimension
    if dimensions is not None and dimensions > dim:
        raise APIError(
            422,
            f"dimensions={dimensions} exceeds the model's {dim} dimensions",
            param="dimensions",
            code="invalid_value",
        )
    if isinstance(input, str):
        input = [input]
    if input and isinstance(input[0], int):  # one list of token ids
        input = [input]
    engine.check_count(len(input), "input")
    if isinstance(input[0], str):
        ids = await engine.tokenize(input, True, "input")
    else:
        ids = engine.truncate_ids(input, True, "input")
    # OpenAI embeddings are always unit length, including after a `dimensions` cut.
    return await engine.embed_ids(ids, normalize=True, dimensions=dimensions)


def openai_embedding_list(result: Embeddings, model: str, encoding_format: str) -> dict[str, Any]:
    vectors = result.vectors
    if encoding_format == "base64":
        le = vectors.astype("<f4", copy=False)
        data = [
            {
                "object": "embedding",
                "embedding": base64.b64encode(row.tobytes()).decode(),
                "index": i,
            }
            for i, row in enumerate(le)
        ]
    else:
        data = [
            {"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(vectors)
        ]
    tokens = sum(result.token_counts)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# -- Cohere / Jina -----------------------------------------------------------------------------


def rerank_response(
    scores: Scores,
    texts: list[str],
    model: str,
    top_n: int | None,
    return_documents: bool,
    api_version: str,
) -> dict[str, Any]:
    relevance = sigmoid(np.asarray(scores.logits, dtype=np.float64))
    order = np.argsort(-relevance, kind="stable")[: top_n or len(texts)]
    results = []
    for i in order:
        r: dict[str, Any] = {"index": int(i), "relevance_score": float(relevance[i])}
        if return_documents:
            r["document"] = {"text": texts[i]}
        results.append(r)
    tokens = sum(scores.token_counts)
    return {
        "id": str(uuid.uuid4()),
        "model": model,
        "results": results,
        "meta": {
            "api_version": {"version": api_version},
            "billed_units": {"search_units": 1},
            "tokens": {"input_tokens": tokens, "output_tokens": 0},
        },
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
