"""The embedded engine: Qdrant's Rust engine in-process (`qdrant-edge-py`), the default.

Layout under QDRANT_PATH (default DATA_DIR/qdrant):
    edge/.lock             held (flock) by the one process that serves this folder
    edge/<QDRANT_COLLECTION>.alias  the collection that name points at, when switched
                           (written to a temp file, then renamed: atomic)
    edge/<collection>/store.json   {"shard": "<folder>", "dimension": n, "encoder_version": v}
    edge/<collection>/<folder>/    the Edge shard (segments + WAL); a rebuild writes a new folder
                                   and `store.json` is switched to it by a rename.

Every engine call holds the GIL (measured: a Python thread made ~2% progress during a 0.4 s
query batch), so each runs in a worker thread and is kept short: writes go in batches of
`upsert_batch_size` points. `optimize()` (the only way Edge builds HNSW indexes and drops
deleted points) blocks the whole process for tens of seconds, so it never runs here: see
`backend.store.maintenance`, which rebuilds in a child process and swaps the result in.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import qdrant_edge as qe

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

log = logging.getLogger("ragstack.backend.store.edge")
T = TypeVar("T")
ALIAS_SUFFIX = ".alias"
META_FILE = "store.json"


def edge_root(settings: Settings) -> Path:
    return settings.qdrant_folder / "edge"


def shard_config(dimension: int) -> qe.EdgeConfig:
    return qe.EdgeConfig(
        vectors={DENSE: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _field(c: filters.Cond) -> Any:
    if c.kind == "range":
        return qe.FieldCondition(c.key, range=qe.RangeFloat(gte=c.value, lte=c.value))
    if c.kind == "any":
        return qe.FieldCondition(c.key, match=qe.MatchAny(c.value))
    return qe.FieldCondition(c.key, match=qe.MatchValue(c.value))


def edge_filter(items: list[filters.Clause], *, ready: bool = True) -> qe.Filter:
    if ready:
        items = [filters.Cond("ready", "match", 1), *items]
    return filters.build(
        items,
        field=_field,
        any_of=lambda conds: qe.Filter(should=conds),
        all_of=lambda conds: qe.Filter(must=conds),
    )


def metadata_indexes(metadata: dict[str, Any]) -> dict[str, qe.PayloadSchemaType]:
    """The payload index each filterable metadata value needs (see `filters`: booleans are
    matched as 0/1 on `metadata_bools`, floats as ranges)."""
    out: dict[str, qe.PayloadSchemaType] = {}
    for key, value in metadata.items():
        if isinstance(value, bool):
            out[f"metadata_bools.{key}"] = qe.PayloadSchemaType.Integer
        elif isinstance(value, int | float):
            # Float for ints too: an Integer index drops a later float value of the same key
            # from range matches (measured on Edge 0.9.0), while a Float index keeps ints and
            # int matches still read the payload.
            out[f"metadata.{key}"] = qe.PayloadSchemaType.Float
        elif isinstance(value, str):
            out[f"metadata.{key}"] = qe.PayloadSchemaType.Keyword
    return out


def _doc_filter(document_id: str) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition("document_id", match=qe.MatchValue(document_id))])


def _translate(exc: Exception, where: str) -> StoreError:
    """Edge raises bare `Exception("Service runtime error: ...")`: give it a meaning."""
    text = str(exc)
    if "WouldBlock" in text:
        return StoreLocked(locked_message(where))
    if "No space left" in text or "ENOSPC" in text:
        return StoreError(
            f"the embedded store at {where} is out of disk space: free space and retry"
        )
    return StoreError(f"Qdrant ({where}, embedded): {text}")


class Collection:
    """One collection: a folder holding `store.json` and the current shard folder."""

    def __init__(self, folder: Path, shard: qe.EdgeShard | None = None) -> None:
        self.folder = folder
        self.name = folder.name
        meta = json.loads((folder / META_FILE).read_text())
        self.dimension: int = meta["dimension"]
        self.encoder_version: int = meta.get("encoder_version", 0)
        self.shard_dir = folder / meta["shard"]
        self.shard = shard or qe.EdgeShard.load(str(self.shard_dir))
        # Payload fields with an index (kept by rebuilds: the index lives in the shard).
        self.indexed: set[str] = set(self.shard.info().payload_schema)
        # Maintenance state (backend.store.maintenance).
        self.writes_since_build = 0
        self.rebuilding = False
        self.journal: Any = None

    @staticmethod
    def create(folder: Path, dimension: int) -> Collection:
        """A new, empty collection (its shard stays open: one handle per folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex[:8]}"
        shard = qe.EdgeShard.create(str(folder / name), shard_config(dimension))
        for key, schema in (
            ("document_id", qe.PayloadSchemaType.Keyword),
            ("ready", qe.PayloadSchemaType.Integer),
        ):
            shard.update(qe.UpdateOperation.create_field_index(key, schema))
        meta = {"shard": name, "dimension": dimension, "encoder_version": ENCODER_VERSION}
        _write_atomic(folder / META_FILE, json.dumps(meta))
        return Collection(folder, shard)

    def swap(self, new_shard: str, shard: qe.EdgeShard) -> qe.EdgeShard:
        """Point the collection at another shard folder (already built); returns the old shard."""
        meta = {
            "shard": new_shard,
            "dimension": self.dimension,
            "encoder_version": self.encoder_version,
        }
        _write_atomic(self.folder / META_FILE, json.dumps(meta))
        old, self.shard = self.shard, shard
        self.shard_dir = self.folder / new_shard
        return old


class EdgeStore(VectorStore):
    engine: Literal["embedded", "server"] = "embedded"

    def __init__(
        self, settings: Settings, prepare: Callable[[Settings], object] | None = None
    ) -> None:
        self.settings = settings
        self.root = edge_root(settings)
        self.location = str(settings.qdrant_folder)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = open(self.root / ".lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise StoreLocked(locked_message(settings.qdrant_folder)) from None
        try:
            if prepare is not None:
                prepare(settings)  # e.g. migrate a folder written by earlier versions, once
        except BaseException:
            self._lock_file.close()
            self._lock_file = None
            raise
        self._collections: dict[str, Collection] = {}
        self._open_lock = threading.Lock()
        self._setup_lock = asyncio.Lock()
        # Held by each write, and by a rebuild while it copies and while it swaps shards.
        self.write_lock = asyncio.Lock()
        self._maintainer: asyncio.Task[None] | None = None
        self.retiring: list[tuple[qe.EdgeShard, Path]] = []  # replaced shards, closed soon
        self.bm25 = BM25Encoder()
        # QDRANT_COLLECTION is the logical name; `<name>.alias` (if any) names the collection
        # it points at, as a server alias would.
        self._alias_file = self.root / f"{settings.qdrant_collection}{ALIAS_SUFFIX}"
        alias = self._alias_file
        self._active = alias.read_text().strip() if alias.exists() else settings.qdrant_collection
        # Open the active collection now: a broken or foreign folder fails at start-up.
        try:
            if (self.root / self._active / META_FILE).exists():
                self._open(self._active)
        except BaseException:
            self._lock_file.close()
            self._lock_file = None
            raise

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def collection(self) -> str:
        return self._active

    def _open(self, name: str) -> Collection | None:
        with self._open_lock:
            if name in self._collections:
                return self._collections[name]
            folder = self.root / name
            if not (folder / META_FILE).exists():
                return None
            try:
                c = Collection(folder)
            except Exception as exc:
                raise _translate(exc, str(folder)) from None
            if c.encoder_version != ENCODER_VERSION:
                with contextlib.suppress(Exception):
                    c.shard.close()
                raise StoreError(
                    f"collection {name!r} in {self.location} was indexed with BM25 encoder "
                    f"version {c.encoder_version}, this backend encodes with version "
                    f"{ENCODER_VERSION}: keyword search would not match. {REINDEX_HINT}",
                    retry_after=None,
                )
            self._collections[name] = c
            return c

    def _get(self, collection: str | None) -> Collection | None:
        if self._lock_file is None:
            raise StoreError(f"Qdrant ({self.location}, embedded): the store is closed")
        name = collection or self._active
        return self._collections.get(name) or self._open(name)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except StoreError:
            raise
        except Exception as exc:
            raise _translate(exc, self.location) from exc

    async def close(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(BaseException):
                await self._maintainer
            self._maintainer = None
        from backend.store.maintenance import retire

        for shard, folder in list(self.retiring):
            await retire(self, shard, folder)

        def close_all() -> None:
            for c in self._collections.values():
                with contextlib.suppress(Exception):
                    c.shard.close()
            self._collections.clear()

        await self._run(close_all)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def ensure_available(self) -> None:
        self._get(None)  # raises once closed; otherwise the engine is in this process

    async def health(self) -> StoreHealth:
        c = self._get(None)
        points = None
        if c is not None:
            # info() sums segment sizes: no scan, answered in microseconds.
            points = (await self._run(c.shard.info)).points_count
        return StoreHealth(
            ok=self._lock_file is not None,
            engine="embedded",
            location=self.location,
            collection=self._active,
            exists=c is not None,
            points=points,
        )

    # -- collections -------------------------------------------------------------------------------

    async def collection_exists(self, collection: str | None = None) -> bool:
        self._get(None)
        return (self.root / (collection or self._active) / META_FILE).exists()

    async def ensure_collection(self, dimension: int, collection: str | None = None) -> None:
        name = collection or self._active
        c = self._get(name)
        if c is None:
            async with self._setup_lock:
                c = await self._run(self._create, name, dimension)
        if c.dimension != dimension:
            raise StoreError(
                f"collection {name!r} holds {c.dimension}-dimensional vectors but the embedder "
                f"produces {dimension}; the embedding model changed. Use a new "
                "QDRANT_COLLECTION or re-index into a new collection.",
                retry_after=None,
            )

    def _create(self, name: str, dimension: int) -> Collection:
        # Under the open lock: a reader must not load the folder while it is being created.
        with self._open_lock:
            if name in self._collections:
                return self._collections[name]
            c = Collection.create(self.root / name, dimension)
            self._collections[name] = c
        log.info("created collection %s (dimension %d) in %s", name, dimension, self.root)
        return c

    async def list_collections(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob(f"*/{META_FILE}"))

    async def drop_collection(self, collection: str) -> None:
        if collection == self._active:
            raise StoreError(
                f"collection {collection!r} is the active one; switch to another first",
                retry_after=None,
            )
        with self._open_lock:
            c = self._collections.pop(collection, None)
        if c is not None:
            await self._run(c.shard.close)
        await asyncio.to_thread(shutil.rmtree, self.root / collection, True)

    async def set_active_collection(self, collection: str) -> None:
        if self._get(collection) is None:
            raise StoreError(f"collection {collection!r} does not exist", retry_after=None)
        await asyncio.to_thread(_write_atomic, self._alias_file, collection)
        self._active = collection

    async def ensure_metadata_indexes(
        self, metadata: dict[str, Any], collection: str | None = None
    ) -> None:
        # Without a payload index Edge checks a metadata filter on every candidate, reading its
        # payload: 1.2 s per query for an any-of of 100 floats at 10^4 points, against 2.4 ms
        # indexed. Building one is cheap and persisted in the shard (80 ms at 10^4 points), so
        # each metadata key gets one the first time a document carries it.
        wanted = metadata_indexes(metadata)
        c = self._get(collection)
        if c is None or wanted.keys() <= c.indexed:
            return
        async with self._setup_lock:
            for key, schema in wanted.items():
                if key in c.indexed:
                    continue
                await self._update(
                    collection, qe.UpdateOperation.create_field_index(key, schema), 0
                )
                c.indexed.add(key)

    # -- writes ------------------------------------------------------------------------------------

    def _require(self, collection: str | None) -> Collection:
        c = self._get(collection)
        if c is None:
            raise StoreError(
                f"collection {(collection or self._active)!r} does not exist yet", retry_after=None
            )
        return c

    def open_collections(self) -> list[Collection]:
        return list(self._collections.values())

    async def _update(self, collection: str | None, op: qe.UpdateOperation, points: int) -> None:
        """Apply one write. `points`: how many points it adds or removes (for maintenance)."""
        from backend.store import maintenance

        if self._maintainer is None:
            self._maintainer = asyncio.get_running_loop().create_task(maintenance.run_forever(self))
        async with self.write_lock:
            c = self._require(collection)
            await self._run(c.shard.update, op)
            maintenance.record_write(self, c, op, points)

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
        sparse = await asyncio.to_thread(self.bm25.encode_documents, [c.text for c in chunks])
        points = [
            qe.Point(
                point_id(content_hash, c.index),
                {DENSE: [float(x) for x in v], SPARSE: qe.SparseVector(sv[0], sv[1])},
                payload_for(document_id=document_id, chunk=c, filename=filename, metadata=metadata),
            )
            for c, v, sv in zip(chunks, vectors, sparse, strict=True)
        ]
        size = self.settings.upsert_batch_size
        for i in range(0, len(points), size):
            batch = points[i : i + size]
            await self._update(collection, qe.UpdateOperation.upsert_points(batch), len(batch))

    async def set_ready(
        self, content_hash: str, chunk_count: int, collection: str | None = None
    ) -> None:
        ids: list[Any] = [point_id(content_hash, i) for i in range(chunk_count)]
        size = self.settings.upsert_batch_size
        for i in range(0, len(ids), size):
            op = qe.UpdateOperation.set_payload(ids[i : i + size], {"ready": 1})
            await self._update(collection, op, 0)

    async def delete_document(self, document_id: str, collection: str | None = None) -> None:
        if self._get(collection) is None:
            return
        points = await self.count(document_id, collection)  # indexed: cheap
        op = qe.UpdateOperation.delete_points_by_filter(_doc_filter(document_id))
        await self._update(collection, op, points)

    async def maintain(self) -> None:
        from backend.store.maintenance import maintain

        await maintain(self)

    # -- reads -------------------------------------------------------------------------------------

    async def count(self, document_id: str | None = None, collection: str | None = None) -> int:
        c = self._get(collection)
        if c is None:
            return 0
        flt = _doc_filter(document_id) if document_id else None
        return await self._run(c.shard.count, qe.CountRequest(exact=True, filter=flt))

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
        c = self._get(collection)
        if c is None:
            return []
        flt = edge_filter(filters.clauses(document_ids, metadata))
        indices, values = self.bm25.encode_query(text)
        dense = [float(x) for x in vector] if vector is not None else None
        request: qe.QueryRequest
        if mode == "sparse" or (mode == "hybrid" and dense is None):
            if not indices:
                return []  # only stop-words: BM25 has nothing to match
            q = qe.Query.Nearest(qe.SparseVector(indices, values), using=SPARSE)
            request = qe.QueryRequest(limit=limit, query=q, filter=flt, with_payload=True)
        elif mode == "dense" or not indices:
            assert dense is not None
            q = qe.Query.Nearest(dense, using=DENSE)
            request = qe.QueryRequest(limit=limit, query=q, filter=flt, with_payload=True)
        else:
            assert dense is not None
            n = max(limit, self.settings.hybrid_prefetch)
            fusion = qe.Fusion.Rrf(k=RRF_K) if self.settings.fusion == "rrf" else qe.Fusion.Dbsf()
            request = qe.QueryRequest(
                limit=limit,
                prefetches=[
                    qe.Prefetch(limit=n, query=qe.Query.Nearest(dense, using=DENSE), filter=flt),
                    qe.Prefetch(
                        limit=n,
                        query=qe.Query.Nearest(qe.SparseVector(indices, values), using=SPARSE),
                        filter=flt,
                    ),
                ],
                query=fusion,
                filter=flt,
                with_payload=True,
            )
        points = await self._run(c.shard.query, request)
        return [Hit(score=p.score, payload=p.payload or {}, id=str(p.id)) for p in points]

    async def retrieve(self, ids: Sequence[str], collection: str | None = None) -> list[Hit]:
        c = self._get(collection)
        if c is None or not ids:
            return []
        records = await self._run(c.shard.retrieve, list(ids), True, False)
        by_id = {str(r.id): r for r in records}
        return [Hit(score=0.0, payload=by_id[i].payload or {}, id=i) for i in ids if i in by_id]
