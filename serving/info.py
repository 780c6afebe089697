"""GET routes of the ml-api (/health, /info, /tokenizer): a small FastAPI app mounted into the
BentoML service, so they appear in the same OpenAPI spec. BentoML's own /readyz, /livez and
/metrics stay as they are."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from serving import __version__
from serving.engine import Engine

info_app = FastAPI(title="ml-api info", openapi_url=None, docs_url=None, redoc_url=None)


def _engine(request: Request) -> Engine | None:
    return getattr(request.app.state, "engine", None)


def _model_info(engine: Engine) -> dict[str, Any]:
    embedder = dataclasses.asdict(engine.embedder.info)
    reranker = dataclasses.asdict(engine.reranker.info) if engine.reranker else None
    return {"embedder": embedder, "reranker": reranker}


@info_app.get("/docs.json", include_in_schema=False)
async def openapi_document(request: Request) -> JSONResponse:
    # Served here, ahead of BentoML's own /docs.json, with the real error responses.
    spec = getattr(request.app.state, "openapi", None)
    if spec is None:
        return JSONResponse({"error": "starting", "error_type": "Unhealthy"}, 503)
    return JSONResponse(spec)


@info_app.get("/health", summary="Liveness plus the models loaded and the devices they run on")
async def health(request: Request) -> JSONResponse:
    engine = _engine(request)
    if engine is None:
        return JSONResponse({"status": "loading", "models": None}, status_code=503)
    return JSONResponse({"status": "ok", "models": _model_info(engine)})


@info_app.get("/info", summary="Models, limits and versions (like TEI's /info)")
async def info(request: Request) -> JSONResponse:
    engine = _engine(request)
    if engine is None:
        return JSONResponse({"error": "models are loading", "error_type": "Unhealthy"}, 503)
    s = engine.settings
    models = _model_info(engine)
    models["embedder"]["trained_dimensions"] = [engine.embedder.info.dimension]
    # "int8" (ML_API_EMBEDDER_PRECISION=int8 on CPU), "fp16" or "fp32"
    models["embedder"]["precision"] = getattr(engine.embedder, "precision", None)
    models["embedder"]["dimensions_note"] = (
        "`dimensions` must equal the model's size (or be omitted): this model was not trained "
        "for shortened (Matryoshka) embeddings, so a cut vector would be a worse one"
    )
    return JSONResponse(
        {
            "version": __version__,
            "models": models,
            "limits": {
                "max_client_batch": s.max_client_batch,
                "max_payload_bytes": s.max_payload_bytes,
                "max_batch_tokens": engine.embed_batcher.token_budget,
                "max_batch_items": engine.embed_batcher.max_items,
                "max_queued_tokens": s.max_queued_tokens,
                "max_queued_bulk_tokens": s.max_queued_bulk_tokens,
                "embed_bulk_runner": engine.embed_batcher.bulk_runner,
                "rerank_max_length": engine.reranker.info.max_length if engine.reranker else None,
            },
            "queue": {
                "embed_queued_tokens": engine.embed_batcher.queued_tokens,
                "embed_queued_bulk_tokens": engine.embed_batcher.lane_queued_tokens("bulk"),
                "rerank_queued_tokens": (
                    engine.rerank_batcher.queued_tokens if engine.rerank_batcher else 0
                ),
            },
        }
    )


@info_app.get("/tokenizer", summary="The embedder's tokenizer.json, for token-aware chunking")
async def tokenizer(request: Request) -> Response:
    engine = _engine(request)
    if engine is None:
        return JSONResponse({"error": "models are loading", "error_type": "Unhealthy"}, 503)
    return Response(engine.embedder.tokenizer_json(), media_type="application/json")


__all__ = ["info_app"]
