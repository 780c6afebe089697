"""The store contract: what the backend needs from a vector engine, independent of the engine.

Two engines implement it (`backend.store.edge` embedded in the process, `backend.store.server`
a Qdrant server through qdrant-client) and one contract suite (tests/backend/test_store_contract.py)
runs against both, so ingest, search and the routes never see which one is behind.

Data model: each chunk is one point with a dense vector (`dense`, cosine) and a BM25 sparse
vector (`bm25`, IDF applied by the engine). Point ids are deterministic (`point_id`), so
re-ingesting the same content overwrites instead of duplicating, and a chunk's neighbours can be
fetched by id. Chunks are written not-ready and flipped ready once every chunk of the document
is stored; searches only see ready chunks.

Payload layout written by this version (the public metadata API is unchanged):
    document_id, chunk_index, page, start, end, text, filename, metadata (as given),
    ready: 0 | 1 on the embedded engine (an int: Qdrant Edge never matches a boolean
    `MatchValue`); a boolean on a server, as earlier versions wrote it there,
    metadata_bools: {key: 0 | 1} for every boolean metadata value, which the embedded engine's
    filters read (same reason; `metadata` keeps the real booleans for display).
`backend.store.filters` turns one search filter into conditions that select the same points on
both engines.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# Point ids: uuid5 of "<content hash>:<chunk index>" in this namespace, so re-ingesting the same
# content overwrites rather than duplicates.
POINT_NAMESPACE = uuid.UUID("8f0d8a4e-5b7e-4c61-9d0f-2d7f5c3e9a10")
DENSE = "dense"
SPARSE = "bm25"
MetadataValue = str | int | float | bool
MetadataFilter = dict[str, MetadataValue | list[MetadataValue]]
Mode = Literal["dense", "sparse", "hybrid"]
Fusion = Literal["dbsf", "rrf"]
# RRF's constant. Qdrant's server default is 2; Edge needs it explicitly, so both get this one.
RRF_K = 2

# What to do when a collection was built with another BM25 encoder (sparse.ENCODER_VERSION).
REINDEX_HINT = (
    "Re-index: set QDRANT_COLLECTION to a new name (or stop the backend and delete the old "
    "collection), restart, and upload the documents again (`ragctl ingest <folder>`)."
)

# Retry-After sent to our clients while the store is unreachable.
STORE_RETRY_AFTER_S = 5.0


class StoreError(Exception):
    """The store is unreachable or refused an operation. The message says what to do.
    `retry_after` is None when waiting will not help (a misconfiguration)."""

    def __init__(self, message: str, retry_after: float | None = STORE_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreLocked(StoreError):
    """Another process (or another handle in this one) holds the embedded storage folder."""


def locked_message(folder: object) -> str:
    return (
        f"the embedded Qdrant folder {folder} is in use by another process: embedded mode "
        "allows one process per folder. Run a single backend worker, stop the other process, "
        "or set QDRANT_URL to use a Qdrant server."
    )


def point_id(content_hash: str, index: int) -> str:
    """The id of chunk `index` of the content with this hash (stable across runs and engines)."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{content_hash}:{index}"))


class ChunkLike(Protocol):
    """What the store needs of a chunk (backend.ingest.chunk.Chunk has it); the store does not
    import the write path."""

    index: int
    page: int | None
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Hit:
    """One point found: score (engine's; fused for hybrid), payload as written, point id."""

    score: float
    payload: dict[str, Any]
    id: str = ""


@dataclass(frozen=True)
class GroupHit:
    """One document in a grouped search: its best chunk (and that chunk's score) and how many of
    its chunks were among the candidates the engine considered."""

    document_id: str
    best: Hit
    matches: int

    @property
    def score(self) -> float:
        return self.best.score


@dataclass(frozen=True)
class SearchFilter:
    """Which ready chunks a search may return: all conditions must hold.
    `document_ids` None = any document; [] = none. `metadata` values: a scalar must equal, a
    list is any-of (strings, ints, floats and booleans alike)."""

    document_ids: list[str] | None = None
    metadata: MetadataFilter = field(default_factory=dict)


@dataclass(frozen=True)
class StoreHealth:
    """A cheap answer for /health: never counts points on the serving path."""

    ok: bool
    engine: Literal["embedded", "server"]
    location: str
    collection: str
    exists: bool
    points: int | None = None  # when the engine knows it without counting (None = unknown)
    detail: str | None = None


def payload_for(
    *,
    document_id: str,
    chunk: ChunkLike,
    filename: str | None,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """The payload of a not-yet-ready chunk, the same for every engine (see the module doc)."""
    return {
        "document_id": document_id,
        "chunk_index": chunk.index,
        "page": chunk.page,
        "start": chunk.start,
        "end": chunk.end,
        "text": chunk.text,
        "filename": filename,
        "metadata": metadata,
        "metadata_bools": {k: int(v) for k, v in metadata.items() if isinstance(v, bool)},
        "ready": 0,
    }


class VectorStore(abc.ABC):
    """One logical store: several named collections, one of them active (what ingest and
    search use when no collection is named). Every method is async and never blocks the event
    loop for long: engine calls run in worker threads, big writes go in batches.

    `collection` arguments default to the active collection."""

    engine: Literal["embedded", "server"]
    location: str  # folder or URL, for messages and /health

    @property
    def local(self) -> bool:
        """True for the embedded engine (kept for callers written before the interface)."""
        return self.engine == "embedded"

    @property
    @abc.abstractmethod
    def collection(self) -> str:
        """The active collection's name."""

    # -- lifecycle ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ensure_available(self) -> None:
        """Raise StoreError unless the engine answered recently or answers now (cheap)."""

    @abc.abstractmethod
    async def health(self) -> StoreHealth:
        """State for /health, answered without counting points."""

    # -- collections -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def collection_exists(self, collection: str | None = None) -> bool: ...

    @abc.abstractmethod
    async def ensure_collection(self, dimension: int, collection: str | None = None) -> None:
        """Create the collection (cosine `dimension` + BM25) once; refuse a dimension mismatch
        or a collection written with another BM25 encoder version (StoreError, no retry)."""

    async def physical_collection(self) -> str:
        """The collection the active name stands for (on a server the active name may be an
        alias; a re-index must drop the collection behind it, not the alias)."""
        return self.collection

    @abc.abstractmethod
    async def list_collections(self) -> list[str]:
        """Names of the collections this store holds (not aliases)."""

    @abc.abstractmethod
    async def drop_collection(self, collection: str) -> None:
        """Delete a collection and its data. Refuses the active one (StoreError)."""

    @abc.abstractmethod
    async def set_active_collection(self, collection: str) -> None:
        """Make `collection` (which must exist) the active one, atomically: a search sees the
        old or the new collection, never a mix. Server: an alias; embedded: a pointer file
        renamed into place."""

    @abc.abstractmethod
    async def ensure_metadata_indexes(
        self, metadata: dict[str, Any], collection: str | None = None
    ) -> None:
        """Payload indexes for these metadata keys (where the engine has them)."""

    # -- writes ------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def upsert(
        self,
        *,
        document_id: str,
        content_hash: str,
        chunks: Sequence[ChunkLike],
        vectors: Sequence[Sequence[float]],
        filename: str | None,
        metadata: dict[str, Any],
        collection: str | None = None,
    ) -> None:
        """Store chunks, not yet searchable, in batches of `upsert_batch_size` points."""

    @abc.abstractmethod
    async def set_ready(
        self, content_hash: str, chunk_count: int, collection: str | None = None
    ) -> None:
        """Make a document's chunks searchable (addressed by id, not by filter)."""

    @abc.abstractmethod
    async def delete_document(self, document_id: str, collection: str | None = None) -> None: ...

    @abc.abstractmethod
    async def maintain(self) -> None:
        """One step of index maintenance (build/refresh indexes, clean up deleted points),
        done so that no request waits more than a second for it. A no-op on a server, whose own
        optimizer does this."""

    # -- reads -------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def count(self, document_id: str | None = None, collection: str | None = None) -> int:
        """Exact number of points (of one document). Not for the serving hot path at scale."""

    @abc.abstractmethod
    async def search(
        self,
        vector: Sequence[float] | None,
        *,
        limit: int,
        text: str = "",
        mode: Mode = "dense",
        document_ids: list[str] | None = None,
        metadata: MetadataFilter | None = None,
        collection: str | None = None,
    ) -> list[Hit]:
        """Top `limit` ready chunks by dense cosine, BM25, or both fused (settings.fusion)."""

    async def search_groups(
        self,
        vector: Sequence[float] | None,
        *,
        limit: int,
        text: str = "",
        mode: Mode = "dense",
        document_ids: list[str] | None = None,
        metadata: MetadataFilter | None = None,
        candidates: int = 100,
        collection: str | None = None,
    ) -> list[GroupHit]:
        """Up to `limit` documents, one hit each (the best chunk), ranked by that chunk's score,
        taken from the top `candidates` chunks (so at most `candidates` documents); `matches`
        counts the document's chunks among those candidates.

        Grouped here over the same candidate list on both engines rather than with the
        server's `query_points_groups`: Edge has no grouping, and the contract requires both
        engines to answer alike (the server's groups are also taken from a bounded candidate
        set, so this loses nothing a caller could rely on)."""
        hits = await self.search(
            vector,
            limit=candidates,
            text=text,
            mode=mode,
            document_ids=document_ids,
            metadata=metadata,
            collection=collection,
        )
        groups: dict[str, list[Hit]] = {}
        for h in hits:  # best first: the first hit of a document is its best chunk
            groups.setdefault(h.payload["document_id"], []).append(h)
        out = [GroupHit(document_id=d, best=hs[0], matches=len(hs)) for d, hs in groups.items()]
        return out[:limit]

    @abc.abstractmethod
    async def retrieve(self, ids: Sequence[str], collection: str | None = None) -> list[Hit]:
        """Points by id (e.g. a chunk's neighbours: `point_id(content_hash, index +- 1)`), in
        the order asked, missing ids left out; score 0. Not-ready points are returned too."""
