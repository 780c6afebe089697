"""Health: the backend, the ml-api and Qdrant. Always 200; `status` says ok or degraded."""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request

from backend.deps import IngestorDep, MLDep, RegistryDep, StoreDep
from backend.mlapi import MLAPIError
from backend.store import StoreError

router = APIRouter(tags=["health"])
HEALTH_TIMEOUT_S = 5.0


def _version() -> str:
    try:
        return version("ragstack")
    except PackageNotFoundError:
        return "unknown"


async def _ml_status(ml: MLDep) -> dict[str, Any]:
    out: dict[str, Any] = {"url": ml.settings.ml_api_url}
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            body = await ml.health()
    except (MLAPIError, TimeoutError) as exc:
        return {**out, "status": "down", "error": str(exc) or "timed out"}
    models = body.get("models") or {}
    return {
        **out,
        "status": "ok" if body.get("status") == "ok" else str(body.get("status")),
        "embedder": models.get("embedder"),
        "reranker": models.get("reranker"),
    }


async def _qdrant_status(store: StoreDep) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mode": store.engine,
        "location": store.location,
        "collection": store.collection,
    }
    try:
        # The engine answers from what it keeps (no point counting): cheap under any load.
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            state = await store.health()
    except (StoreError, TimeoutError) as exc:
        return {**out, "status": "down", "error": str(exc) or "timed out"}
    return {**out, "status": "ok", "collection_exists": state.exists, "points": state.points}


@router.get("/health", summary="Backend, ml-api and Qdrant status (200 even when degraded)")
async def health(
    request: Request, ml: MLDep, store: StoreDep, registry: RegistryDep, ingestor: IngestorDep
) -> dict[str, Any]:
    ml_status, qdrant_status = await asyncio.gather(_ml_status(ml), _qdrant_status(store))
    ok = ml_status["status"] == "ok" and qdrant_status["status"] == "ok"
    return {
        "status": "ok" if ok else "degraded",
        "backend": {
            "status": "ok",
            "version": _version(),
            "documents": registry.counts(),
            "ingest_pending": ingestor.pending,
            "max_pending_documents": ingestor.settings.max_pending_documents,
            "queue_full": ingestor.full,
            "uploads_in_progress": request.app.state.upload_gate.active,
            # Extracted text kept for re-indexing (in the registry, zlib-compressed).
            "stored_text": registry.text_usage(),
            "reindex": request.app.state.reindexer.status()["state"],
        },
        "ml_api": ml_status,
        "qdrant": qdrant_status,
    }
