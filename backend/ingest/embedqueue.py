"""One queue for the embedding work of every document being ingested.

Documents hand their chunk texts to `EmbedQueue.embed`; a single task sends them to the ml-api
as /embed requests of up to EMBED_BATCH_SIZE texts, with at most EMBED_CONCURRENCY in flight for
the whole backend. Whenever a request slot is free it sends what is queued at once (a lone
document is never held back waiting for company); while all slots are busy, the chunks of all
documents pile up and go out together as full requests. Requests are marked bulk and patient
(backend/mlapi.py), so the ml-api's 429 + Retry-After paces ingestion instead of failing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from backend.mlapi import MLClient

log = logging.getLogger("ragstack.backend.ingest")


@dataclass(eq=False)
class _Text:
    text: str
    future: asyncio.Future[list[float]]


class EmbedQueue:
    def __init__(self, ml: MLClient, batch_size: int, concurrency: int) -> None:
        self.ml = ml
        self.batch_size = batch_size
        self.concurrency = concurrency
        self._queue: deque[_Text] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors for `texts`, in order; their requests may carry other documents' chunks."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._dispatch(), name="embed-queue")
        loop = asyncio.get_running_loop()
        items = [_Text(t, loop.create_future()) for t in texts]
        self._queue.extend(items)
        self._wake.set()
        try:
            return list(await asyncio.gather(*(i.future for i in items)))
        except BaseException:
            # Cancelled or failed: whatever of ours is still queued is not sent.
            for i in items:
                i.future.cancel()
            raise

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._in_flight) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _dispatch(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            await slots.acquire()
            batch = self._take()
            while not batch:
                self._wake.clear()
                await self._wake.wait()
                batch = self._take()
            task = asyncio.create_task(self._send(batch, slots))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    def _take(self) -> list[_Text]:
        batch: list[_Text] = []
        while self._queue and len(batch) < self.batch_size:
            item = self._queue.popleft()
            if not item.future.done():  # skip chunks of cancelled documents
                batch.append(item)
        return batch

    async def _send(self, batch: list[_Text], slots: asyncio.Semaphore) -> None:
        try:
            vectors = await self.ml.embed_bulk([i.text for i in batch])
        except Exception as exc:  # fails the documents in this request, not the queue
            for i in batch:
                if not i.future.done():
                    i.future.set_exception(exc)
        else:
            for i, v in zip(batch, vectors, strict=True):
                if not i.future.done():
                    i.future.set_result(v)
        finally:
            slots.release()
            # A document whose futures all failed may never be awaited again.
            for i in batch:
                if i.future.done() and not i.future.cancelled():
                    with contextlib.suppress(BaseException):
                        i.future.exception()
