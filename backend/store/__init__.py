"""The vector store: one contract (`base`), two engines, the BM25 encoder beside them.

- `base`: the contract every engine keeps (`VectorStore`, `Hit`, `GroupHit`, errors);
- `edge`: the embedded default, Qdrant's engine in-process (`qdrant-edge-py`) in QDRANT_PATH;
- `server`: a Qdrant server (QDRANT_URL) through qdrant-client;
- `filters`: the search filter rules both engines translate;
- `sparse`: the BM25 encoder (ingest and queries);
- `maintenance`: index rebuilds off the serving path for the embedded engine;
- `migrate`: moves a folder written by earlier versions (qdrant-client local mode) to `edge`.

`backend.store.select.open_store(settings)` opens the engine the settings ask for (it is not
re-exported here: the package must not import its engines, or every engine would import itself).
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
    "point_id",
]
