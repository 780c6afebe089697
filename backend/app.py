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

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

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
    return app


app = create_app()
