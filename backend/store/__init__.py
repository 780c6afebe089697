"""The vector store: one contract (`base`), two engines, the BM25 encoder beside them.

- `base`: the contract every engine keeps (`VectorStore`, `Hit`, `GroupHit`, errors);
- `edge`: the embedded default, Qdrant's engine in-process (`qdrant-edge-py`) in QDRANT_PATH;
- `server`: a Qdrant server (QDRANT_URL) through qdrant-client;
- `filters`: the search filter rules both engines translate;
- `sparse`: the BM25 encoder (ingest and queries);
- `maintenance`: index rebuilds off the serving path for the embedded engine;
- `migrate`: moves a folder written by earlier versions (qdrant-client local mode) to `edge`.

`VectorStore(settings)` (or `open_store`) opens the engine the settings ask for.
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
    VectorStore,
    point_id,
)
from backend.store.select import open_store

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
    "open_store",
    "point_id",
]
