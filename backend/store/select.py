"""Which engine a configuration gets: a Qdrant server when QDRANT_URL is set (or a
qdrant-client is handed in, as the tests do with its local mode), else the embedded engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.settings import Settings
    from backend.store.base import VectorStore


def engine_class(settings: Settings, client: Any = None) -> type[VectorStore]:
    if settings.qdrant_url or client is not None:
        from backend.store.server import ServerStore

        return ServerStore
    from backend.store.edge import EdgeStore

    return EdgeStore


def open_store(settings: Settings, client: Any = None) -> VectorStore:
    if client is not None:
        return engine_class(settings, client)(settings, client)  # type: ignore[call-arg]
    return engine_class(settings)(settings)  # type: ignore[call-arg]
