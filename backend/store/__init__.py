"""The vector store: one contract (`base`), two engines, the BM25 encoder beside them.

`open_store(settings)` picks the engine: a Qdrant server when QDRANT_URL is set, else the
embedded engine in QDRANT_PATH (default DATA_DIR/qdrant).
"""

from backend.store.base import (
    DENSE,
    SPARSE,
    GroupHit,
    Hit,
    MetadataFilter,
    StoreError,
    StoreHealth,
    StoreLocked,
    point_id,
)
from backend.store.server import VectorStore, open_client

__all__ = [
    "DENSE",
    "SPARSE",
    "GroupHit",
    "Hit",
    "MetadataFilter",
    "StoreError",
    "StoreHealth",
    "StoreLocked",
    "VectorStore",
    "open_client",
    "point_id",
]
