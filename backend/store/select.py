"""Which engine a configuration gets: a Qdrant server when QDRANT_URL is set (or a
qdrant-client is handed in, as the tests do with its local mode), else the embedded engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.settings import Settings
    from backend.store.base import VectorStore


def open_store(settings: Settings, client: Any = None) -> VectorStore:
    if settings.qdrant_url or client is not None:
        from backend.store.server import ServerStore

        return ServerStore(settings, client)
    from backend.store.edge import EdgeStore
    from backend.store.migrate import migrate

    # The migration of a folder written by earlier versions runs inside the engine's folder
    # lock; it is handed in because it writes through the engine's shard code (no import loop).
    return EdgeStore(settings, prepare=migrate)
