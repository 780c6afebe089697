"""Background ingestion: parse -> chunk -> embed -> store, one document per worker.

The registry row is the gate: chunks are stored as not-ready, flipped to ready, and only then is
the document marked `indexed`. Any failure (parser error, ml-api down after retries, Qdrant
error) deletes whatever chunks were written and marks the document `failed` with the reason.
Uploaded bytes wait in DATA_DIR/uploads/<id> (named by document id, never by the client's
filename) until their worker picks them up; parsing runs in a separate process (isolate.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
import zlib
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from backend.ingest import isolate
from backend.ingest.chunk import Chunk, Chunker, load_tokenizer
from backend.ingest.embedqueue import EmbedQueue
from backend.ingest.isolate import Limits, ParserUnavailable
from backend.ingest.parse import InvalidDocument, Page
from backend.mlapi import MLAPIError, MLClient, ModelInfo
from backend.registry import Document, Registry, Status
from backend.settings import Settings
from backend.store import StoreError, VectorStore

log = logging.getLogger("ragstack.backend.ingest")
T = TypeVar("T")

# Retrying the bookkeeping of a failure whose first attempt met a full or failing disk.
SETTLE_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
INTERRUPTED = "interrupted: the backend stopped before ingestion finished; upload the file again"


async def _complete(awaitable: Awaitable[T]) -> T:
    """Await a store write so that cancelling the caller still lets the write land first;
    otherwise a write still running in its thread could add points after the cleanup ran."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def pack_pages(pages: Sequence[Page]) -> tuple[bytes, int]:
    """The extracted text kept for re-indexing: zlib-compressed JSON [[page, text], ...]."""
    raw = json.dumps([[p.number, p.text] for p in pages], ensure_ascii=False).encode()
    return zlib.compress(raw, 6), len(raw)


def unpack_pages(data: bytes) -> list[Page]:
    return [Page(n, text) for n, text in json.loads(zlib.decompress(data))]


class QueueFull(Exception):
    def __init__(self, pending: int, adding: int, limit: int) -> None:
        super().__init__(pending, adding, limit)
        self.pending, self.adding, self.limit = pending, adding, limit


@dataclass
class Reservation:
    ingestor: Ingestor
    held: int

    def release(self, n: int) -> None:
        n = min(n, self.held)
        self.held -= n
        self.ingestor.reserved -= n


class Ingestor:
    def __init__(
        self, settings: Settings, registry: Registry, store: VectorStore, ml: MLClient
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.ml = ml
        # Shared by all documents, so their chunks fill /embed requests together.
        self.embeddings = EmbedQueue(ml, settings.embed_batch_size, settings.embed_concurrency)
        self.spool = settings.spool_dir
        self.limits = Limits.of(settings)
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.reserved = 0  # places held by uploads being registered (see reserve)
        # Failures not yet recorded (disk full): retried in the background until they are.
        self.settling: dict[str, asyncio.Task[None]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._chunker: Chunker | None = None
        self._chunker_tag: str | None = None
        self._chunker_lock = asyncio.Lock()
        # Cleared while a re-index switches collections: queued documents wait (see reindex.py).
        self.open = asyncio.Event()
        self.open.set()
        # Collections written besides the active one (a running re-index's target): deletions
        # must reach them too.
        self.also_delete_from: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Finish what a previous process left half done: interrupted ingests become `failed`
        (their partial chunks removed), pending deletions complete, and a version superseded
        just before a stop is removed."""
        self.spool.mkdir(parents=True, exist_ok=True)
        for doc in self.registry.deleting():
            await self._purge(doc.id)
        for doc in self.registry.unfinished():
            try:
                await self.store.delete_document(doc.id)
            except StoreError as exc:
                log.warning("recovery: chunks of %s not removed yet: %s", doc.id, exc)
            self.registry.mark_failed(doc.id, INTERRUPTED)
            log.info("recovery: document %s (%s) marked failed (interrupted)", doc.id, doc.filename)
        for doc in self.registry.replaced_but_present():
            await self.delete(doc.id)
        for leftover in self.spool.iterdir():
            leftover.unlink(missing_ok=True)

    def start(self) -> None:
        for i in range(self.settings.ingest_concurrency):
            self._workers.append(asyncio.create_task(self._worker(), name=f"ingest-{i}"))

    async def stop(self) -> None:
        for task in [*self.running.values(), *self._workers]:
            task.cancel()
        await asyncio.gather(*self.running.values(), *self._workers, return_exceptions=True)
        self._workers.clear()
        # Unrecorded failures are completed by the next start's recovery instead.
        for task in self.settling.values():
            task.cancel()
        await asyncio.gather(*self.settling.values(), return_exceptions=True)
        await self.embeddings.close()

    # -- API used by the routes --------------------------------------------------------------------

    def spool_path(self, doc_id: str) -> Path:
        return self.spool / doc_id

    def incoming_path(self) -> Path:
        """A fresh spool file for an upload not yet registered (recovery removes leftovers)."""
        return self.spool / f"incoming-{uuid.uuid4().hex}"

    async def submit(self, doc_id: str, spooled: Path) -> None:
        """Queue a registered document whose bytes are in the spool file `spooled`."""
        await asyncio.to_thread(spooled.replace, self.spool_path(doc_id))
        self.queue.put_nowait(doc_id)

    @property
    def pending(self) -> int:
        return self.queue.qsize() + len(self.running) + self.reserved

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[Reservation]:
        """Hold `n` places of MAX_PENDING_DOCUMENTS for an upload being registered; raises
        QueueFull when they are not free. Places not released are given back at the end."""
        limit = self.settings.max_pending_documents
        if self.pending + n > limit:
            raise QueueFull(self.pending, n, limit)
        reservation = Reservation(self, n)
        self.reserved += n
        try:
            yield reservation
        finally:
            reservation.release(reservation.held)

    @property
    def full(self) -> bool:
        return self.pending >= self.settings.max_pending_documents

    async def delete(self, doc_id: str) -> bool:
        """Remove a document and every chunk; stops its ingestion first if it is running."""
        if self.registry.get(doc_id) is None:
            return False
        # DELETING first: a crash from here on still completes the deletion at start-up.
        self.registry.update(doc_id, status=Status.DELETING)
        task = self.running.get(doc_id)
        # A document's own ingestion may delete it (superseded); it must not cancel itself.
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task])
        await self._purge(doc_id)
        return True

    async def _purge(self, doc_id: str) -> None:
        await self.store.delete_document(doc_id)
        for collection in list(self.also_delete_from):
            await self.store.delete_document(doc_id, collection=collection)
        self.registry.delete(doc_id)
        self.spool_path(doc_id).unlink(missing_ok=True)

    async def chunker(self) -> Chunker:
        """The chunker for the ml-api's current embedder, built from its own tokenizer."""
        info = await self.ml.model_info()
        async with self._chunker_lock:
            if self._chunker is None or self._chunker_tag != info.embedder_tag:
                body = await self.ml.tokenizer()
                tok = await asyncio.to_thread(load_tokenizer, body)
                self._chunker = Chunker(
                    tok,
                    chunk_size=self.settings.chunk_size,
                    overlap=self.settings.chunk_overlap,
                    max_length=info.max_length,
                )
                self._chunker_tag = info.embedder_tag
                log.info(
                    "chunker ready: embedder %s, %d tokens per chunk, overlap %d",
                    info.embedder_tag,
                    self._chunker.capacity,
                    self._chunker.overlap,
                )
            return self._chunker

    # -- work --------------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            doc_id = await self.queue.get()
            await self.open.wait()
            task = asyncio.create_task(self._ingest(doc_id), name=f"ingest:{doc_id}")
            self.running[doc_id] = task
            try:
                await asyncio.wait([task])
            finally:
                self.running.pop(doc_id, None)
                self.queue.task_done()

    async def _ingest(self, doc_id: str) -> None:
        doc = self.registry.get(doc_id)
        if doc is None or doc.status != Status.QUEUED:
            return  # deleted (or re-queued twice) while waiting
        started = time.perf_counter()
        try:
            chunks = await self._run(doc)
        except asyncio.CancelledError:
            await self._fail(doc, INTERRUPTED)
            raise
        except InvalidDocument as exc:
            await self._fail(doc, str(exc))
        except ParserUnavailable as exc:
            await self._fail(doc, f"{exc}; upload the file again later")
        except (MLAPIError, StoreError) as exc:
            await self._fail(doc, exc.args[0] if exc.args else type(exc).__name__)
        except (sqlite3.Error, OSError) as exc:  # the registry or DATA_DIR: full or failing disk
            await self._fail(doc, f"storage error: {exc}; upload the file again later")
        except Exception as exc:
            log.exception("ingestion of %s crashed", doc.id)
            await self._fail(doc, f"internal error: {type(exc).__name__}: {exc}")
        else:
            log.info(
                "indexed document id=%s file=%s chunks=%d seconds=%.2f",
                doc.id,
                doc.filename,
                chunks,
                time.perf_counter() - started,
            )
        finally:
            self.spool_path(doc.id).unlink(missing_ok=True)

    async def _run(self, doc: Document) -> int:
        self.registry.update(doc.id, status=Status.PARSING)
        pages = await isolate.parse(doc.kind, self.spool_path(doc.id), self.limits)
        packed, raw_bytes = await asyncio.to_thread(pack_pages, pages)
        self.registry.put_text(doc.id, packed, raw_bytes)
        chunker = await self.chunker()
        chunks = await asyncio.to_thread(chunker.split, pages, doc.kind)
        if not chunks:
            raise InvalidDocument("no extractable text")
        total = len(chunks)
        self.registry.update(
            doc.id,
            status=Status.EMBEDDING,
            pages=len(pages) if doc.kind == "pdf" else None,
            chunks_total=total,
            chunks_done=0,
        )
        info = await self.ml.model_info()
        await self.embed_and_store(doc, chunks, info, progress=True)
        self.registry.mark_indexed(doc.id, total)
        await self._replace_versions(doc)
        return total

    async def embed_and_store(
        self,
        doc: Document,
        chunks: list[Chunk],
        info: ModelInfo,
        *,
        collection: str | None = None,
        progress: bool = False,
    ) -> None:
        """Embed `chunks` and store them in `collection` (default: the active one), then make
        them searchable. Used by ingestion and by the re-index."""
        await _complete(self.store.ensure_collection(info.dimension, collection=collection))
        self.registry.set_embedder(
            collection or self.store.collection, info.dimension, info.embedder_tag
        )
        await _complete(self.store.ensure_metadata_indexes(doc.metadata, collection=collection))
        total = len(chunks)
        # Groups big enough to keep every embed request slot busy; each group is stored as soon
        # as it is embedded, which also bounds memory for long documents.
        step = self.settings.embed_batch_size * self.settings.embed_concurrency
        for i in range(0, total, step):
            group = chunks[i : i + step]
            vectors = await self.embeddings.embed([c.text for c in group])
            if any(len(v) != info.dimension for v in vectors):
                raise MLAPIError("ml-api returned vectors of an unexpected dimension")
            await _complete(
                self.store.upsert(
                    document_id=doc.id,
                    content_hash=doc.content_hash,
                    chunks=group,
                    vectors=vectors,
                    filename=doc.filename,
                    metadata=doc.metadata,
                    collection=collection,
                )
            )
            if progress:
                self.registry.update(doc.id, chunks_done=i + len(group))
        await _complete(self.store.set_ready(doc.content_hash, total, collection=collection))

    async def _replace_versions(self, doc: Document) -> None:
        """An explicit `replace` at upload: the old document goes once this one is indexed."""
        # Re-read: a duplicate upload may have named a document to replace meanwhile.
        current = self.registry.get(doc.id)
        if current is None or current.replaces is None or current.replaces == doc.id:
            return
        old = self.registry.get(current.replaces)
        if old is not None and old.status != Status.DELETING:
            log.info("document %s replaces %s (%s)", doc.id, old.id, old.filename)
            await self.delete(old.id)

    async def _fail(self, doc: Document, reason: str) -> None:
        current = self.registry.get(doc.id)
        if current is None or current.status == Status.DELETING:
            log.info("ingestion stopped id=%s file=%s: document deleted", doc.id, doc.filename)
        else:
            log.warning("ingestion failed id=%s file=%s reason=%s", doc.id, doc.filename, reason)
        try:
            await self._settle_failure(doc.id, reason)
        except (StoreError, sqlite3.Error, OSError) as exc:
            # Left as is, the document would stay `embedding` with its points until a restart.
            log.warning(
                "failure of %s not recorded yet (%s); retrying in the background", doc.id, exc
            )
            if doc.id not in self.settling:
                task = asyncio.create_task(self._settle_later(doc.id, reason))
                self.settling[doc.id] = task
                task.add_done_callback(lambda _: self.settling.pop(doc.id, None))

    async def _settle_failure(self, doc_id: str, reason: str) -> None:
        """Remove every point of a failed document, then record the failure: both or retry."""
        await self.store.delete_document(doc_id)
        self.registry.mark_failed(doc_id, reason)

    async def _settle_later(self, doc_id: str, reason: str) -> None:
        attempt = 0
        while True:
            await asyncio.sleep(SETTLE_BACKOFF_S[min(attempt, len(SETTLE_BACKOFF_S) - 1)])
            attempt += 1
            try:
                await self._settle_failure(doc_id, reason)
            except (StoreError, sqlite3.Error, OSError) as exc:
                log.warning(
                    "failure of %s still not recorded (attempt %d): %s", doc_id, attempt, exc
                )
                continue
            log.info("failure of %s recorded after %d retries", doc_id, attempt)
            return
