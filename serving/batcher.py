"""Continuous, token-budget batching for one model (the scheme TEI uses, inside the service).

Requests put already-tokenized items in a queue. One worker thread owns the model: whenever it
is free it takes everything queued (a FIFO window, so no item waits behind later arrivals),
sorts that window by length and cuts it into batches whose *padded* size stays under the token
budget. There is no timer: a lone request runs at once, and under load batches fill up by
themselves while the previous one computes. Work beyond `max_queued_tokens` is refused with
`Overloaded` (-> 429) instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from serving.batch_plan import plan_batches

log = logging.getLogger(__name__)

T = TypeVar("T")  # what the model takes per item (token ids, a text pair, ...)
R = TypeVar("R")  # what it returns per item


class Overloaded(Exception):
    """The queue is full; the caller should answer 429 with Retry-After."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("the server is at capacity, retry later")
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Item(Generic[T]):
    payload: T
    tokens: int
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    started: float = 0.0


@dataclass
class BatchStats:
    """Per-request timing, for the x-queue-time / x-inference-time headers."""

    queue_ms: float = 0.0
    inference_ms: float = 0.0
    tokens: int = 0


class Batcher(Generic[T, R]):
    def __init__(
        self,
        name: str,
        run: Callable[[list[T]], Sequence[R]],
        *,
        token_budget: int,
        max_items: int,
        max_queued_tokens: int,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self.token_budget = token_budget
        self.max_items = max_items
        self.max_queued_tokens = max_queued_tokens
        self._on_batch = on_batch
        self._queue: deque[_Item[T]] = deque()
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._closed = False
        # Recent throughput estimate (tokens/s), to size Retry-After sensibly.
        self._tokens_per_s = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    def retry_after_s(self) -> float:
        if self._tokens_per_s <= 0:
            return 1.0
        return max(1.0, min(30.0, self._queued_tokens / self._tokens_per_s))

    async def submit(
        self, payloads: Sequence[T], tokens: Sequence[int]
    ) -> tuple[list[R], BatchStats]:
        """Queue `payloads` (with their token counts) and wait for all their results."""
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        total = sum(tokens)
        items = [
            _Item(p, t, loop.create_future(), loop, now)
            for p, t in zip(payloads, tokens, strict=True)
        ]
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name} batcher is stopped")
            # One request is always admitted when nothing is queued, however large.
            if self._queued_tokens and self._queued_tokens + total > self.max_queued_tokens:
                raise Overloaded(self.retry_after_s())
            self._queue.extend(items)
            self._queued_tokens += total
            self._cond.notify()
        try:
            results = await asyncio.gather(*(i.future for i in items))
        except asyncio.CancelledError:
            # The client went away: items not started yet are skipped by the worker.
            for i in items:
                i.future.cancel()
            raise
        done = time.perf_counter()
        first_start = min(i.started for i in items)
        return list(results), BatchStats(
            queue_ms=(first_start - now) * 1000,
            inference_ms=(done - first_start) * 1000,
            tokens=total,
        )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # -- worker thread -------------------------------------------------------------------------

    def _take_window(self) -> list[_Item[T]]:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            # A window of a few batches' worth of tokens, oldest first: long enough to sort by
            # length usefully, short enough that nobody waits behind far later arrivals.
            window: list[_Item[T]] = []
            budget = self.token_budget * 8
            while self._queue and (not window or budget > 0):
                item = self._queue.popleft()
                budget -= item.tokens
                window.append(item)
            return window

    def _loop(self) -> None:
        while True:
            window = self._take_window()
            if not window:
                return
            live = [i for i in window if not i.future.cancelled()]
            dropped = sum(i.tokens for i in window if i.future.cancelled())
            if dropped:
                self._release(dropped)
            for idx in plan_batches([i.tokens for i in live], self.token_budget, self.max_items):
                self._run_batch([live[j] for j in idx])

    def _run_batch(self, batch: list[_Item[T]]) -> None:
        batch = [i for i in batch if not i.future.cancelled()]
        if not batch:
            return
        start = time.perf_counter()
        for i in batch:
            i.started = start
        tokens = sum(i.tokens for i in batch)
        try:
            results = self._run([i.payload for i in batch])
        except Exception as exc:  # the model failed: fail these requests, keep serving
            log.exception("batch failed", extra={"batcher": self.name, "size": len(batch)})
            for i in batch:
                i.loop.call_soon_threadsafe(_set_exception, i.future, exc)
        else:
            for i, r in zip(batch, results, strict=True):
                i.loop.call_soon_threadsafe(_set_result, i.future, r)
        elapsed = time.perf_counter() - start
        self._release(tokens)
        if elapsed > 0:
            rate = tokens / elapsed
            self._tokens_per_s = (
                rate if not self._tokens_per_s else 0.8 * self._tokens_per_s + 0.2 * rate
            )
        if self._on_batch is not None:
            self._on_batch(len(batch), max(i.tokens for i in batch) * len(batch), elapsed)

    def _release(self, tokens: int) -> None:
        with self._cond:
            self._queued_tokens -= tokens


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
