"""Re-index: re-chunk and re-embed every document with the model the ml-api serves now, into a
new collection, then switch to it atomically.

Why: changing the embedding model (or the chunk size) used to need every file uploaded again.
The extracted text of each document is kept in the registry (compressed), so the corpus can be
rebuilt from it; documents indexed before that text was kept are rebuilt from their stored
chunks (each chunk carries its exact offsets into its page).

While a re-index runs, queries keep answering from the old (active) collection (BM25 only when
the model changed: see backend.search), uploads are accepted but wait in the queue (their
vectors belong in the new collection), and deletions reach both collections. The job's state is
a registry row, and `reindexed` lists the documents already written to the new collection, so a
restart resumes where the job stood; any error rolls back: the new collection is dropped and the
old one stays active. The old collection is dropped only after the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from backend.ingest.parse import Page
from backend.ingest.pipeline import Ingestor, pack_pages, unpack_pages
from backend.mlapi import MLAPIError
from backend.registry import Document, Registry, Status, now
from backend.store import StoreError, VectorStore, point_id

log = logging.getLogger("ragstack.backend.reindex")

JOB = "reindex"
BATCH = 32  # documents read from the registry per step
ACTIVE_STATES = ("running", "switching", "switched")


class ReindexConflict(Exception):
    """A re-index is already running (or none is, for cancel)."""


def rebuild_pages(hits: list[Any]) -> list[Page]:
    """A document's page texts from its stored chunks: each chunk's text goes back at its
    offsets. Exact where chunks cover the text (they do, overlapping); any uncovered character
    (whitespace the splitter trimmed between chunks) becomes a space."""
    pages: dict[int | None, list[str]] = {}
    for hit in sorted(hits, key=lambda h: h.payload["chunk_index"]):
        p = hit.payload
        chars = pages.setdefault(p.get("page"), [])
        end = int(p["end"])
        if len(chars) < end:
            chars.extend(" " * (end - len(chars)))
        chars[int(p["start"]) : end] = list(p["text"])
    order = sorted(pages, key=lambda n: -1 if n is None else n)
    return [Page(n, "".join(pages[n])) for n in order]


class Reindexer:
    def __init__(self, registry: Registry, store: VectorStore, ingestor: Ingestor) -> None:
        self.registry = registry
        self.store = store
        self.ingestor = ingestor
        self.task: asyncio.Task[None] | None = None

    # -- state -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        job = self.registry.get_job(JOB) or {"state": "idle"}
        if job["state"] == "running":
            job["done"] = self.registry.reindexed_count()
            job["total"] = job["done"] + self.registry.not_reindexed_count()
        return job

    def _save(self, job: dict[str, Any], **changes: Any) -> dict[str, Any]:
        job.update(changes, updated_at=now())
        self.registry.put_job(JOB, job)
        return job

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    # -- control -----------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        if self.running:
            raise ReindexConflict("a re-index is already running; GET /reindex shows its progress")
        # The collection behind the active name (a server's alias): the one to drop at the end.
        source = await self.store.physical_collection()
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        base = self.ingestor.settings.qdrant_collection
        target = f"{base}_r{stamp}"
        if target in (source, self.store.collection):  # keep names distinct
            target += "b"
        self.registry.clear_reindexed()
        job = self._save(
            {
                "state": "running",
                "source": source,
                "target": target,
                "started_at": now(),
                "finished_at": None,
                "error": None,
            }
        )
        self.task = asyncio.create_task(self._run(job), name="reindex")
        return self.status()

    async def resume(self) -> None:
        """At start-up: carry on with a job a stopped process left running."""
        job = self.registry.get_job(JOB)
        if job is not None and job["state"] in ACTIVE_STATES:
            log.info("resuming re-index %s -> %s (%s)", job["source"], job["target"], job["state"])
            self.task = asyncio.create_task(self._run(job), name="reindex")

    async def cancel(self) -> dict[str, Any]:
        job = self.registry.get_job(JOB)
        if not self.running or job is None or job["state"] != "running":
            raise ReindexConflict("no re-index is running that can still be cancelled")
        assert self.task is not None
        self.task.cancel()
        await asyncio.wait([self.task])
        await self._rollback(job, "cancelled", None)
        return self.status()

    async def stop(self) -> None:
        """Process shutdown: leave the job as it stands, to be resumed at the next start."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    # -- work --------------------------------------------------------------------------------------

    async def _run(self, job: dict[str, Any]) -> None:
        ingestor = self.ingestor
        target = job["target"]
        ingestor.open.clear()  # new documents wait: their vectors belong in the new collection
        ingestor.also_delete_from.add(target)
        try:
            while ingestor.running:  # documents already being ingested finish first
                await asyncio.sleep(0.1)
            if job["state"] == "running":
                await self._copy(job)
                count = self.registry.reindexed_count()
                self._save(job, state="switching", done=count, total=count)
            if job["state"] == "switching":
                await self.store.set_active_collection(target)
                active = self.store.collection  # the target, or a server alias now naming it
                if active != target:
                    self.registry.forget_collection(active)
                    self.registry.set_embedder(active, job["dimension"], job["embedder"])
                self.registry.apply_reindexed()
                self._save(job, state="switched")
                log.info("re-index switched %s -> %s", job["source"], target)
        except asyncio.CancelledError:
            raise
        except (MLAPIError, StoreError, ValueError) as exc:
            log.warning("re-index failed, rolling back: %s", exc)
            await self._rollback(job, "failed", str(exc))
            return
        except Exception as exc:
            log.exception("re-index crashed, rolling back")
            await self._rollback(job, "failed", f"internal error: {type(exc).__name__}: {exc}")
            return
        finally:
            if job["state"] != "running":
                ingestor.also_delete_from.discard(target)
                ingestor.open.set()
        # Only now, with the new collection active, is the old one dropped.
        source = job["source"]
        if source != target:
            with contextlib.suppress(StoreError):
                if await self.store.collection_exists(source):
                    await self.store.drop_collection(source)
            self.registry.forget_collection(source)
        self._save(job, state="done", finished_at=now())

    async def _copy(self, job: dict[str, Any]) -> None:
        ingestor = self.ingestor
        info = await ingestor.ml.model_info(refresh=True)
        chunker = await ingestor.chunker()
        self._save(job, embedder=info.embedder_tag, dimension=info.dimension)
        # Created even for an empty corpus: the switch needs a collection to point at.
        await self.store.ensure_collection(info.dimension, collection=job["target"])
        self.registry.set_embedder(job["target"], info.dimension, info.embedder_tag)
        while docs := self.registry.not_reindexed(BATCH):
            for doc in docs:
                pages = await self._pages(doc, job["source"])
                chunks = await asyncio.to_thread(chunker.split, pages, doc.kind)
                if not chunks:
                    raise ValueError(f"document {doc.id} ({doc.filename}): no text to re-index")
                await ingestor.embed_and_store(doc, chunks, info, collection=job["target"])
                current = self.registry.get(doc.id)
                if current is None or current.status != Status.INDEXED:
                    # Deleted while it was being re-embedded: its deletion missed these points.
                    await self.store.delete_document(doc.id, collection=job["target"])
                    continue
                self.registry.mark_reindexed(doc.id, len(chunks))
            self._save(job)

    async def _pages(self, doc: Document, source: str) -> list[Page]:
        packed = self.registry.get_text(doc.id)
        if packed is not None:
            return await asyncio.to_thread(unpack_pages, packed)
        # Indexed before extracted text was kept: rebuild it from the chunks, and keep it.
        count = doc.chunk_count or 0
        ids = [point_id(doc.content_hash, i) for i in range(count)]
        hits = await self.store.retrieve(ids, collection=source)
        if len(hits) != count or count == 0:
            raise ValueError(
                f"document {doc.id} ({doc.filename}): its text is not stored and only "
                f"{len(hits)} of {count} chunks were found; upload it again"
            )
        pages = rebuild_pages(hits)
        packed, raw_bytes = await asyncio.to_thread(pack_pages, pages)
        self.registry.put_text(doc.id, packed, raw_bytes)
        return pages

    async def _rollback(self, job: dict[str, Any], state: str, error: str | None) -> None:
        target = job["target"]
        with contextlib.suppress(StoreError):
            if target != self.store.collection and await self.store.collection_exists(target):
                await self.store.drop_collection(target)
        self.registry.forget_collection(target)
        self.registry.clear_reindexed()
        self.ingestor.also_delete_from.discard(target)
        self.ingestor.open.set()
        self._save(job, state=state, error=error, finished_at=now())
