"""The server engine: a Qdrant server (QDRANT_URL) through qdrant-client.

qdrant-client's local mode (`QdrantClient(path=...)` or `":memory:"`) speaks the same API and
is used by the contract tests as a stand-in for a server; it is no longer the embedded default
(a pure-Python brute-force engine behind one lock: see `backend.store.edge`). The client is the
synchronous one, run in worker threads; calls are serialized when it is local mode, which is
not thread-safe.

Named collections: the logical name (QDRANT_COLLECTION) may be a real collection (what earlier
versions created) or an alias; `set_active_collection` points the alias at another collection
in one atomic alias update, so searches switch all at once.

A server matches booleans correctly, and collections written by earlier versions hold
`ready: true` with a boolean payload index: so this engine keeps `ready` a boolean and filters
boolean metadata on `metadata.<key>` itself, exactly as before (no migration of server data);
`metadata_bools` is written too, so the payload layout matches the embedded engine's otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from backend.settings import Settings
from backend.store import filters
from backend.store.base import (
    DENSE,
    REINDEX_HINT,
    RRF_K,
    SPARSE,
    ChunkLike,
    Hit,
    MetadataFilter,
    Mode,
    StoreError,
    StoreHealth,
    StoreLocked,
    VectorStore,
    locked_message,
    payload_for,
    point_id,
)
from backend.store.sparse import ENCODER_VERSION, BM25Encoder

log = logging.getLogger("ragstack.backend.store.server")

T = TypeVar("T")
AVAILABLE_TTL_S = 10.0
# Recorded in the collection's metadata (Qdrant >= 1.16) with the BM25 encoder version.
ENCODER_KEY = "ragstack_bm25_encoder_version"


def open_client(settings: Settings) -> QdrantClient:
    """A client for QDRANT_URL; without it, qdrant-client's local mode in QDRANT_PATH (what
    earlier versions used as the embedded engine: the migration and the tests open it)."""
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
        raise StoreLocked(locked_message(folder)) from None


def is_local(client: QdrantClient) -> bool:
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


def _fast_local_commits(client: QdrantClient) -> None:
    """WAL + synchronous=NORMAL on every local-mode collection's SQLite file: local mode
    otherwise commits (and fsyncs) every point on its own. This reaches into qdrant-client's
    local mode; if its layout changes, nothing is tuned."""
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


def _field(c: filters.Cond) -> qm.Condition:
    if c.kind == "range":
        return qm.FieldCondition(key=c.key, range=qm.Range(gte=c.value, lte=c.value))
    if c.kind == "any":
        return qm.FieldCondition(key=c.key, match=qm.MatchAny(any=c.value))
    return qm.FieldCondition(key=c.key, match=qm.MatchValue(value=c.value))


def _real_bools(items: list[filters.Clause]) -> list[filters.Clause]:
    """Boolean metadata conditions on the booleans themselves (see the module doc), so data
    written by earlier versions (no `metadata_bools`) is found."""
    out: list[filters.Clause] = []
    for item in items:
        alts = item if isinstance(item, list) else [item]
        real = [
            filters.Cond("metadata." + c.key.split(".", 1)[1], "match", bool(v))
            for c in alts
            if c.key.startswith("metadata_bools.")
            for v in c.value
        ]
        if not real:
            out.append(item)
            continue
        rest = [c for c in alts if not c.key.startswith("metadata_bools.")]
        both = [*rest, *real]
        out.append(both[0] if len(both) == 1 else both)
    return out


def server_filter(items: list[filters.Clause]) -> qm.Filter:
    return filters.build(
        [filters.Cond("ready", "match", True), *_real_bools(items)],
        field=_field,
        any_of=lambda conds: qm.Filter(should=conds),
        all_of=lambda conds: qm.Filter(must=conds),
    )


def _doc_filter(document_id: str) -> qm.Filter:
    return qm.Filter(
        must=[qm.FieldCondition(key="document_id", match=qm.MatchValue(value=document_id))]
    )


class ServerStore(VectorStore):
    engine: Literal["embedded", "server"] = "server"

    def __init__(self, settings: Settings, client: QdrantClient | None = None) -> None:
        self.settings = settings
        self.name = settings.qdrant_collection
        self.client = client or open_client(settings)
        self._local = is_local(self.client)
        self.location = settings.qdrant_url or (
            "local mode" if client is not None else str(settings.qdrant_folder)
        )
        self._lock = threading.Lock() if self._local else None
        self._dimension: dict[str, int] = {}
        self._indexed_keys: set[tuple[str, str]] = set()
        # Workers ingesting at the same time must not both try to create the collection.
        self._setup_lock = asyncio.Lock()
        self._ok_at = float("-inf")
        self.bm25 = BM25Encoder()

    @property
    def collection(self) -> str:
        return self.name

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

    async def health(self) -> StoreHealth:
        exists = await self.collection_exists()
        points = None
        if exists and not self._local:
            # The server keeps this number: no count, no scan.
            info = await self._run(self.client.get_collection, self.name)
            points = info.points_count
        self._ok_at = time.monotonic()
        return StoreHealth(
            ok=True,
            engine="server",
            location=self.location,
            collection=self.name,
            exists=exists,
            points=points,
        )

    # -- collections -------------------------------------------------------------------------------

    async def collection_exists(self, collection: str | None = None) -> bool:
        name = collection or self.name
        if await self._run(self.client.collection_exists, name):
            return True
        return name == self.name and await self._alias_target() is not None

    async def physical_collection(self) -> str:
        return await self._alias_target() or self.name

    async def _alias_target(self) -> str | None:
        aliases = await self._run(self.client.get_aliases)
        for a in aliases.aliases:
            if a.alias_name == self.name:
                return a.collection_name
        return None

    async def ensure_collection(self, dimension: int, collection: str | None = None) -> None:
        """Create the collection (cosine, `dimension`) once; refuse a dimension mismatch."""
        name = collection or self.name
        if self._dimension.get(name) == dimension:
            return
        async with self._setup_lock:
            await self._ensure_collection(name, dimension)

    async def _ensure_collection(self, name: str, dimension: int) -> None:
        if self._dimension.get(name) == dimension:
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
                    f"the {DENSE!r} and {SPARSE!r} vectors). Use a new QDRANT_COLLECTION.",
                    retry_after=None,
                )
            if size != dimension:
                raise StoreError(
                    f"collection {name!r} holds {size}-dimensional vectors but the "
                    f"embedder produces {dimension}; the embedding model changed. Use a new "
                    "QDRANT_COLLECTION or re-create the collection.",
                    retry_after=None,
                )
            meta = getattr(info.config, "metadata", None) or {}
            version = meta.get(ENCODER_KEY, ENCODER_VERSION)  # absent: written by version 1
            if version != ENCODER_VERSION:
                raise StoreError(
                    f"collection {name!r} was indexed with BM25 encoder version {version}, "
                    f"this backend encodes with version {ENCODER_VERSION}: keyword search "
                    f"would not match. {REINDEX_HINT}",
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
                metadata={ENCODER_KEY: ENCODER_VERSION},
            )
            log.info("created collection %s (dimension %d)", name, dimension)
        if self._local:
            await self._run(_fast_local_commits, self.client)
        await self._ensure_index(name, "document_id", qm.PayloadSchemaType.KEYWORD)
        await self._ensure_index(name, "ready", qm.PayloadSchemaType.BOOL)
        self._dimension[name] = dimension

    async def _ensure_index(self, name: str, key: str, schema: qm.PayloadSchemaType) -> None:
        # Local mode has no payload indexes (the client would only warn).
        if self._local or (name, key) in self._indexed_keys:
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
        self._indexed_keys.add((name, key))

    async def ensure_metadata_indexes(
        self, metadata: dict[str, Any], collection: str | None = None
    ) -> None:
        name = collection or self.name
        async with self._setup_lock:
            for key, value in metadata.items():
                if isinstance(value, str | int | float | bool):
                    await self._ensure_index(name, f"metadata.{key}", _schema_for(value))

    async def list_collections(self) -> list[str]:
        result = await self._run(self.client.get_collections)
        return sorted(c.name for c in result.collections)

    async def drop_collection(self, collection: str) -> None:
        if collection == self.name or collection == await self._alias_target():
            raise StoreError(
                f"collection {collection!r} is the active one; switch to another first",
                retry_after=None,
            )
        await self._run(self.client.delete_collection, collection)
        self._dimension.pop(collection, None)

    async def set_active_collection(self, collection: str) -> None:
        if not await self._run(self.client.collection_exists, collection):
            raise StoreError(f"collection {collection!r} does not exist", retry_after=None)
        # Not collection_exists(): it also answers True for an alias.
        if self.name in await self.list_collections():
            raise StoreError(
                f"{self.name!r} is a collection, not an alias, so it cannot be switched: "
                "re-index into a new collection and set QDRANT_COLLECTION to its name, or "
                "drop the old collection first",
                retry_after=None,
            )
        ops: list[qm.AliasOperations] = []
        if await self._alias_target() is not None:
            ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=self.name)))
        ops.append(
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=collection, alias_name=self.name)
            )
        )
        # One request: Qdrant applies the alias changes atomically.
        await self._run(self.client.update_collection_aliases, change_aliases_operations=ops)

    # -- writes ------------------------------------------------------------------------------------

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
        """Store chunks (not yet searchable), in batches of UPSERT_BATCH_SIZE points."""
        sparse = await asyncio.to_thread(self.bm25.encode_documents, [c.text for c in chunks])
        points = [
            qm.PointStruct(
                id=point_id(content_hash, c.index),
                vector={
                    DENSE: [float(x) for x in v],
                    SPARSE: qm.SparseVector(indices=sv[0], values=sv[1]),
                },
                payload={
                    **payload_for(
                        document_id=document_id, chunk=c, filename=filename, metadata=metadata
                    ),
                    "ready": False,
                },
            )
            for c, v, sv in zip(chunks, vectors, sparse, strict=True)
        ]
        size = self.settings.upsert_batch_size
        name = collection or self.name
        for i in range(0, len(points), size):
            await self._run(self.client.upsert, name, points=points[i : i + size], wait=True)

    async def set_ready(
        self, content_hash: str, chunk_count: int, collection: str | None = None
    ) -> None:
        """Make a document's chunks searchable. Points are addressed by id, not by a
        document_id filter: local mode has no payload index, so a filter scans every point."""
        ids: list[qm.ExtendedPointId] = [point_id(content_hash, i) for i in range(chunk_count)]
        size = self.settings.upsert_batch_size
        for i in range(0, len(ids), size):
            await self._run(
                self.client.set_payload,
                collection or self.name,
                payload={"ready": True},
                points=ids[i : i + size],
                wait=True,
            )

    async def delete_document(self, document_id: str, collection: str | None = None) -> None:
        name = collection or self.name
        if not await self.collection_exists(name):
            return
        await self._run(
            self.client.delete,
            name,
            points_selector=qm.FilterSelector(filter=_doc_filter(document_id)),
            wait=True,
        )

    async def maintain(self) -> None:
        return None  # the server's optimizer builds indexes and vacuums on its own

    # -- reads -------------------------------------------------------------------------------------

    async def count(self, document_id: str | None = None, collection: str | None = None) -> int:
        name = collection or self.name
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
        name = collection or self.name
        if not await self.collection_exists(name):
            return []
        flt = server_filter(filters.clauses(document_ids, metadata))
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
            query, using = [float(x) for x in vector], DENSE
        else:
            assert vector is not None
            n = max(limit, self.settings.hybrid_prefetch)
            # The filter is applied inside each prefetch, so the fusion sees only allowed chunks.
            prefetch = [
                qm.Prefetch(query=[float(x) for x in vector], using=DENSE, filter=flt, limit=n),
                qm.Prefetch(query=sparse, using=SPARSE, filter=flt, limit=n),
            ]
            fusion: Any = (
                qm.RrfQuery(rrf=qm.Rrf(k=RRF_K))
                if self.settings.fusion == "rrf"
                else qm.FusionQuery(fusion=qm.Fusion.DBSF)
            )
            query = fusion
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
        return [Hit(score=p.score, payload=p.payload or {}, id=str(p.id)) for p in response.points]

    async def retrieve(self, ids: Sequence[str], collection: str | None = None) -> list[Hit]:
        name = collection or self.name
        if not ids or not await self.collection_exists(name):
            return []
        records = await self._run(
            self.client.retrieve, name, ids=list(ids), with_payload=True, with_vectors=False
        )
        by_id = {str(r.id): r for r in records}
        return [Hit(score=0.0, payload=by_id[i].payload or {}, id=i) for i in ids if i in by_id]
