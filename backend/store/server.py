"""The vector store: the one module that talks to Qdrant.

Works the same against a Qdrant server (QDRANT_URL) and embedded local mode (QDRANT_PATH). The
client is the synchronous one, run in worker threads: in local mode the "async" client would
compute on the event loop. Local mode is not thread-safe, so calls are serialized there.

Each chunk is one point with two vectors: `dense` (the embedder's, cosine) and `bm25` (term
weights with BM25 length saturation from `backend.store.sparse`; Qdrant applies IDF at query
time through `Modifier.IDF`, so corpus statistics never need recomputing at ingest).

Chunks are written with `ready: false` and flipped to true in one call once every chunk of the
document is stored; searches only see ready chunks, so a document appears all at once.

Embedded mode persists every point in its own SQLite commit, which with SQLite's defaults costs
an fsync each (~20 ms: a 1,000-chunk document took 25 s to store and 25 s more to flip). The
collection's database is switched to WAL with synchronous=NORMAL, like the registry: a commit
then survives a crash of the process, and only an OS crash or power cut can lose the last ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from backend.ingest.chunk import Chunk
from backend.settings import Settings
from backend.store.sparse import BM25Encoder

log = logging.getLogger("ragstack.backend.store")

T = TypeVar("T")
# Point ids: uuid5 of "<content hash>:<chunk index>" in this namespace, so re-ingesting the same
# content overwrites rather than duplicates.
POINT_NAMESPACE = uuid.UUID("8f0d8a4e-5b7e-4c61-9d0f-2d7f5c3e9a10")
MetadataValue = str | int | float | bool
MetadataFilter = dict[str, MetadataValue | list[MetadataValue]]
DENSE = "dense"
SPARSE = "bm25"
Mode = str  # "dense" | "sparse" | "hybrid"
_FUSIONS = {"dbsf": qm.Fusion.DBSF, "rrf": qm.Fusion.RRF}


# Retry-After sent to our clients while Qdrant is unreachable.
STORE_RETRY_AFTER_S = 5.0
AVAILABLE_TTL_S = 10.0


from backend.store.base import GroupHit, Hit, StoreError, StoreLocked  # noqa: E402


def point_id(content_hash: str, index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{content_hash}:{index}"))


def open_client(settings: Settings) -> QdrantClient:
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantClient(url=settings.qdrant_url, api_key=key, timeout=30)
    folder = settings.qdrant_folder
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(folder))
    except RuntimeError as exc:
        if "already accessed by another instance" not in str(exc):
            raise
        raise StoreLocked(
            f"the embedded Qdrant folder {folder} is in use by another process: embedded mode "
            "allows one process per folder. Run a single backend worker, stop the other process, "
            "or set QDRANT_URL to use a Qdrant server."
        ) from None


def _fast_local_commits(client: QdrantClient) -> None:
    """WAL + synchronous=NORMAL on every embedded collection's SQLite file (see the module doc).
    This reaches into qdrant-client's local mode; if its layout changes, nothing is tuned."""
    local = getattr(client, "_client", None)
    for collection in getattr(local, "collections", {}).values():
        db = getattr(getattr(collection, "storage", None), "storage", None)
        if isinstance(db, sqlite3.Connection):
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")


def _schema_for(value: Any) -> qm.PayloadSchemaType:
    if isinstance(value, bool):
        return qm.PayloadSchemaType.BOOL
    if isinstance(value, int):
        return qm.PayloadSchemaType.INTEGER
    if isinstance(value, float):
        return qm.PayloadSchemaType.FLOAT
    return qm.PayloadSchemaType.KEYWORD


def _condition(key: str, value: MetadataValue | list[MetadataValue]) -> qm.Condition:
    path = f"metadata.{key}"
    if isinstance(value, list):
        if any(isinstance(v, float) and not isinstance(v, bool) for v in value):
            # MatchAny has no floats: OR of exact ranges.
            return qm.Filter(
                should=[qm.FieldCondition(key=path, range=qm.Range(gte=v, lte=v)) for v in value]
            )
        return qm.FieldCondition(key=path, match=qm.MatchAny(any=value))  # type: ignore[arg-type]
    if isinstance(value, float):
        return qm.FieldCondition(key=path, range=qm.Range(gte=value, lte=value))
    return qm.FieldCondition(key=path, match=qm.MatchValue(value=value))


def _doc_filter(document_id: str) -> qm.Filter:
    return qm.Filter(
        must=[qm.FieldCondition(key="document_id", match=qm.MatchValue(value=document_id))]
    )


class VectorStore:
    def __init__(self, settings: Settings, client: QdrantClient | None = None) -> None:
        self.settings = settings
        # Stop-gap until the store package's engines land: the active collection is named by a
        # pointer file replaced atomically (os.replace); absent = QDRANT_COLLECTION.
        self._pointer = settings.data_dir / "active-collection"
        self.collection = (
            self._pointer.read_text().strip()
            if self._pointer.is_file()
            else settings.qdrant_collection
        )
        self.local = not settings.qdrant_url
        self.location = settings.qdrant_url or str(settings.qdrant_folder)
        self.client = client or open_client(settings)
        self._lock = threading.Lock() if self.local else None
        self._dimensions: dict[str, int] = {}
        self._indexed_keys: set[str] = set()
        # Workers ingesting at the same time must not both try to create the collection.
        self._setup_lock = asyncio.Lock()
        self._ok_at = float("-inf")
        self.bm25 = BM25Encoder()

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            if self._lock is None:
                return fn(*args, **kwargs)
            with self._lock:
                return fn(*args, **kwargs)

        try:
            return await asyncio.to_thread(call)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"Qdrant ({self.location}): {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._run(self.client.close)

    async def ensure_available(self) -> None:
        """Raise StoreError unless Qdrant answered recently or answers now."""
        if time.monotonic() - self._ok_at < AVAILABLE_TTL_S:
            return
        await self.collection_exists()
        self._ok_at = time.monotonic()

    # -- collection --------------------------------------------------------------------------------

    async def collection_exists(self, collection: str | None = None) -> bool:
        return await self._run(self.client.collection_exists, collection or self.collection)

    async def list_collections(self) -> list[str]:
        found = await self._run(self.client.get_collections)
        return [c.name for c in found.collections]

    async def drop_collection(self, collection: str) -> None:
        if collection == self.collection:
            raise StoreError(f"collection {collection!r} is the active one", retry_after=None)
        await self._run(self.client.delete_collection, collection)
        self._dimensions.pop(collection, None)

    async def set_active_collection(self, collection: str) -> None:
        if not await self.collection_exists(collection):
            raise StoreError(f"collection {collection!r} does not exist", retry_after=None)
        tmp = self._pointer.with_suffix(".tmp")
        tmp.write_text(collection)
        os.replace(tmp, self._pointer)
        self.collection = collection

    async def ensure_collection(self, dimension: int, collection: str | None = None) -> None:
        """Create the collection (cosine, `dimension`) once; refuse a dimension mismatch."""
        name = collection or self.collection
        if self._dimensions.get(name) == dimension:
            return
        async with self._setup_lock:
            await self._ensure_collection(dimension, name)

    async def _ensure_collection(self, dimension: int, name: str) -> None:
        if self._dimensions.get(name) == dimension:
            return
        if await self.collection_exists(name):
            info = await self._run(self.client.get_collection, name)
            vectors = info.config.params.vectors
            dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
            size = dense.size if dense is not None else None
            sparse = info.config.params.sparse_vectors or {}
            if dense is None or SPARSE not in sparse:
                raise StoreError(
                    f"collection {name!r} was not created by this version (it lacks "
                    f"the {DENSE!r} and {SPARSE!r} vectors). Use a new QDRANT_COLLECTION."
                )
            if size != dimension:
                raise StoreError(
                    f"collection {name!r} holds {size}-dimensional vectors but the "
                    f"embedder produces {dimension}; the embedding model changed. Use a new "
                    "QDRANT_COLLECTION or re-create the collection.",
                    retry_after=None,
                )
        else:
            await self._run(
                self.client.create_collection,
                name,
                vectors_config={
                    DENSE: qm.VectorParams(size=dimension, distance=qm.Distance.COSINE)
                },
                sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            )
            log.info("created collection %s (dimension %d)", name, dimension)
        if self.local:
            await self._run(_fast_local_commits, self.client)
        await self._ensure_index("document_id", qm.PayloadSchemaType.KEYWORD, name)
        await self._ensure_index("ready", qm.PayloadSchemaType.BOOL, name)
        self._dimensions[name] = dimension

    async def _ensure_index(self, key: str, schema: qm.PayloadSchemaType, name: str) -> None:
        # Local mode has no payload indexes (the client would only warn).
        if self.local or f"{name}/{key}" in self._indexed_keys:
            return
        try:
            await self._run(
                self.client.create_payload_index,
                name,
                field_name=key,
                field_schema=schema,
                wait=True,
            )
        except StoreError as exc:
            # A key used with another type before keeps its first index; filtering still works.
            log.warning("payload index on %s not created: %s", key, exc)
        self._indexed_keys.add(f"{name}/{key}")

    async def ensure_metadata_indexes(
        self, metadata: dict[str, Any], collection: str | None = None
    ) -> None:
        async with self._setup_lock:
            for key, value in metadata.items():
                if isinstance(value, str | int | float | bool):
                    name = collection or self.collection
                    await self._ensure_index(f"metadata.{key}", _schema_for(value), name)

    # -- writes ------------------------------------------------------------------------------------

    async def upsert(
        self,
        *,
        document_id: str,
        content_hash: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
        filename: str | None,
        metadata: dict[str, Any],
        collection: str | None = None,
    ) -> None:
        """Store chunks (not yet searchable), in batches of UPSERT_BATCH_SIZE points."""
        sparse = await asyncio.to_thread(self.bm25.encode_documents, [c.text for c in chunks])
        points = [
            qm.PointStruct(
                id=point_id(content_hash, c.index),
                vector={
                    DENSE: list(v),
                    SPARSE: qm.SparseVector(indices=sv[0], values=sv[1]),
                },
                payload={
                    "document_id": document_id,
                    "chunk_index": c.index,
                    "page": c.page,
                    "start": c.start,
                    "end": c.end,
                    "text": c.text,
                    "filename": filename,
                    "metadata": metadata,
                    "ready": False,
                },
            )
            for c, v, sv in zip(chunks, vectors, sparse, strict=True)
        ]
        size = self.settings.upsert_batch_size
        for i in range(0, len(points), size):
            await self._run(
                self.client.upsert,
                collection or self.collection,
                points=points[i : i + size],
                wait=True,
            )

    async def set_ready(
        self, content_hash: str, chunk_count: int, collection: str | None = None
    ) -> None:
        """Make a document's chunks searchable. Points are addressed by id, not by a
        document_id filter: embedded mode has no payload index, so a filter scans every point
        of the collection and flipping each document cost O(collection) (SciFact: 8 s per
        1,000 documents at 2,500 points, growing quadratically)."""
        ids: list[qm.ExtendedPointId] = [point_id(content_hash, i) for i in range(chunk_count)]
        size = self.settings.upsert_batch_size
        for i in range(0, len(ids), size):
            await self._run(
                self.client.set_payload,
                collection or self.collection,
                payload={"ready": True},
                points=ids[i : i + size],
                wait=True,
            )

    async def delete_document(self, document_id: str, collection: str | None = None) -> None:
        name = collection or self.collection
        if not await self.collection_exists(name):
            return
        await self._run(
            self.client.delete,
            name,
            points_selector=qm.FilterSelector(filter=_doc_filter(document_id)),
            wait=True,
        )

    # -- reads -------------------------------------------------------------------------------------

    async def count(self, document_id: str | None = None, collection: str | None = None) -> int:
        name = collection or self.collection
        if not await self.collection_exists(name):
            return 0
        flt = _doc_filter(document_id) if document_id else None
        result = await self._run(self.client.count, name, count_filter=flt, exact=True)
        return result.count

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
        """Top `limit` ready chunks by dense cosine, BM25, or both fused (`settings.fusion`)."""
        name = collection or self.collection
        if not await self.collection_exists(name):
            return []
        must: list[qm.Condition] = [qm.FieldCondition(key="ready", match=qm.MatchValue(value=True))]
        if document_ids is not None:
            must.append(
                qm.FieldCondition(key="document_id", match=qm.MatchAny(any=list(document_ids)))
            )
        for key, value in (metadata or {}).items():
            must.append(_condition(key, value))
        flt = qm.Filter(must=must)
        indices, values = self.bm25.encode_query(text)
        sparse = qm.SparseVector(indices=indices, values=values)
        query: Any
        using: str | None = None
        prefetch: list[qm.Prefetch] | None = None
        if mode == "sparse" or (mode == "hybrid" and vector is None):
            if not indices:
                return []  # only stop-words: BM25 has nothing to match
            query, using = sparse, SPARSE
        elif mode == "dense" or not indices:
            assert vector is not None
            query, using = list(vector), DENSE
        else:
            assert vector is not None
            n = max(limit, self.settings.hybrid_prefetch)
            # The filter is applied inside each prefetch, so the fusion sees only allowed chunks.
            prefetch = [
                qm.Prefetch(query=list(vector), using=DENSE, filter=flt, limit=n),
                qm.Prefetch(query=sparse, using=SPARSE, filter=flt, limit=n),
            ]
            query = qm.FusionQuery(fusion=_FUSIONS[self.settings.fusion])
        response = await self._run(
            self.client.query_points,
            name,
            query=query,
            using=using,
            prefetch=prefetch,
            query_filter=flt,
            limit=limit,
            with_payload=True,
            with_vectors=False,
        )
        return [Hit(score=p.score, payload=p.payload or {}) for p in response.points]

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
        """Stop-gap: grouped here over the top `candidates` chunks."""
        hits = await self.search(
            vector,
            limit=max(candidates, limit),
            text=text,
            mode=mode,
            document_ids=document_ids,
            metadata=metadata,
            collection=collection,
        )
        best: dict[str, Hit] = {}
        counts: dict[str, int] = {}
        for h in hits:
            doc = h.payload["document_id"]
            counts[doc] = counts.get(doc, 0) + 1
            best.setdefault(doc, h)
        groups = [GroupHit(doc, h, counts[doc]) for doc, h in best.items()]
        return groups[:limit]

    async def retrieve(self, ids: Sequence[str], collection: str | None = None) -> list[Hit]:
        name = collection or self.collection
        if not ids or not await self.collection_exists(name):
            return []
        points = await self._run(
            self.client.retrieve, name, ids=list(ids), with_payload=True, with_vectors=False
        )
        by_id = {str(p.id): p for p in points}
        return [Hit(score=0.0, payload=by_id[i].payload or {}, id=i) for i in ids if i in by_id]
