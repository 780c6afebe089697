"""The backend FastAPI app. `create_app(settings)` for tests; `app` for `uvicorn backend.app:app`.

The lifespan opens everything once per process: the registry, the Qdrant client (embedded mode
locks its folder, so a second process fails here with a clear message), the ml-api client and
the ingestion workers; it also runs the start-up recovery of interrupted work.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from backend import errors
from backend.deps import require_api_key
from backend.guards import BodyLimit, UploadGate
from backend.ingest.pipeline import Ingestor
from backend.mlapi import MLClient
from backend.registry import Registry
from backend.reindex import Reindexer
from backend.routes import documents, health, query, reindex
from backend.settings import Settings, get_settings
from backend.store import StoreError
from backend.store.select import open_store
from backend.web import mount_web

log = logging.getLogger("ragstack.backend")


def configure_logging(level: str) -> None:
    """key=value lines on stderr for our loggers; the chatty libraries only at WARNING."""
    root = logging.getLogger("ragstack")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
        )
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        registry = Registry(settings.registry_path)
        try:
            store = open_store(settings)
        except StoreError as exc:  # folder locked, BM25 version, failed migration
            registry.close()
            log.critical("%s", exc)
            raise SystemExit(f"backend start-up failed: {exc}") from None
        ml = MLClient(settings)
        ingestor = Ingestor(settings, registry, store, ml)
        await ingestor.recover()
        ingestor.start()
        reindexer = Reindexer(registry, store, ingestor)
        await reindexer.resume()
        app.state.reindexer = reindexer
        app.state.settings = settings
        app.state.registry = registry
        app.state.store = store
        app.state.ml = ml
        app.state.ingestor = ingestor
        log.info(
            "backend ready: ml_api=%s qdrant=%s collection=%s",
            settings.ml_api_url,
            store.location,
            settings.qdrant_collection,
        )
        try:
            yield
        finally:
            await reindexer.stop()
            await ingestor.stop()
            await ml.aclose()
            await store.close()
            registry.close()

    app = FastAPI(
        title="ragstack backend",
        summary="Document ingestion and semantic search over Qdrant, using the ml-api.",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    app.state.upload_gate = UploadGate(settings.max_concurrent_uploads)
    app.add_middleware(BodyLimit, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    protected = [Depends(require_api_key)]
    app.include_router(documents.router, dependencies=protected)
    app.include_router(query.router, dependencies=protected)
    app.include_router(reindex.router, dependencies=protected)
    app.include_router(health.router)
    # The page and its assets hold no data, so they stay outside the API-key dependency.
    mount_web(app)
    app.openapi = lambda: _openapi(app, keyed=settings.api_key is not None)  # type: ignore[method-assign]
    return app


# What backend/errors.py really sends for invalid input (FastAPI documents a list of items).
_VALIDATION_ERROR: dict[str, Any] = {
    "title": "HTTPValidationError",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "What is wrong, naming field and limit"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def _openapi(app: FastAPI, *, keyed: bool) -> dict[str, Any]:
    """FastAPI's schema, corrected to what the server does: the real 422 body on every route,
    and the bearer key required only when API_KEY is set (then a 401 without it)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["HTTPValidationError"] = _VALIDATION_ERROR
    schemas.pop("ValidationError", None)
    ref = {"$ref": "#/components/schemas/HTTPValidationError"}
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses["422"] = {
                "description": "Invalid input; `detail` names the field and limit",
                "content": {"application/json": {"schema": ref}},
            }
            if "requestBody" in operation:
                responses.setdefault(
                    "400",
                    {
                        "description": "Unreadable body (broken JSON or multipart framing)",
                        "content": {"application/json": {"schema": _DETAIL}},
                    },
                )
            if "security" not in operation:
                continue
            if keyed:
                responses["401"] = {
                    "description": "Missing or invalid API key",
                    "content": {"application/json": {"schema": _DETAIL}},
                }
            else:
                del operation["security"]  # no key set: nothing to send
    if not keyed:
        spec["components"].pop("securitySchemes", None)
    app.openapi_schema = spec
    return spec


_DETAIL: dict[str, Any] = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string"}},
}


app = create_app()
