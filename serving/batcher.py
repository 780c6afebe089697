"""Continuous, token-budget batching for one model (the scheme TEI uses, inside the service),
with two priority lanes.

Requests put already-tokenized items in a lane's queue: `interactive` (queries, the default) or
`bulk` (ingestion). One worker thread owns the model. Each forward pass it picks a lane, takes a
window of that lane's queue (a few batches' worth, oldest first), sorts it by length and cuts it
into batches whose *padded* size stays under the token budget, then runs ONE batch and looks at
the queues again: an interactive request that arrives while bulk work is planned gets into the
very next forward pass instead of waiting for the whole window. The interactive lane goes first,
but while both lanes have work, every `bulk_every`-th pass is a bulk one, so bulk is never
starved. There is no timer: a lone request runs at once, and under load batches fill up by
themselves while the previous one computes. Each lane has its own queue bound; work beyond it is
refused with `Overloaded` (-> 429 + Retry-After) instead of queueing without bound — for bulk
callers that is the backpressure signal.

A pass cannot be pre-empted once started, and on a CPU a bulk pass shares the cores with
everything else the host runs. So a `BackgroundRunner` can take the bulk lane off the model
worker: its own threads, at a lower OS priority (Linux: per-thread nice), run bulk passes with
their own callable (e.g. a single-threaded session of the same model). An interactive pass then
never waits behind a bulk pass, and the kernel gives interactive work the cores first. Bulk is
still guaranteed a share: after `yield_after` interactive passes during which a bulk pass could
not finish, the model worker waits for one to finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from serving.batch_plan import plan_batches

log = logging.getLogger(__name__)

T = TypeVar("T")  # what the model takes per item (token ids, a text pair, ...)
R = TypeVar("R")  # what it returns per item

Lane = Literal["interactive", "bulk"]
LANES: tuple[Lane, ...] = ("interactive", "bulk")


@dataclass(frozen=True)
class BackgroundRunner(Generic[T, R]):
    """Bulk passes on their own threads, at a lower OS priority than interactive ones."""

    run: Callable[[list[T]], Sequence[R]]
    threads: int = 1
    nice: int = 19  # added to the process's niceness, per thread (Linux); 0: same priority
    yield_after: int = 32  # interactive passes while bulk is stuck before bulk gets the cores


def lower_thread_priority(nice: int) -> bool:
    """Make the calling thread `nice` steps less favoured by the scheduler. On Linux a thread is
    a task with its own niceness, so this leaves the rest of the process alone; elsewhere
    setpriority would reach the whole process, so nothing is done. False when not applied."""
    if nice <= 0 or sys.platform != "linux":
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # e.g. a seccomp profile that refuses it: bulk still runs apart
        log.warning("could not lower the bulk runner's priority: %s", exc)
        return False
    return True


class Overloaded(Exception):
    """The lane's queue is full; the caller should answer 429 with Retry-After."""

    def __init__(self, retry_after_s: float, lane: Lane = "interactive") -> None:
        super().__init__("the server is at capacity, retry later")
        self.retry_after_s = retry_after_s
        self.lane = lane


@dataclass(eq=False)
class _Request:
    """One `submit` call: its items' results are collected here, behind a single future, so a
    request costs one future and one wake-up of its event loop, not one per item."""

    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop
    results: list[Any]
    pending: int  # items without a result yet; only the event loop's thread touches it
    started: float = 0.0  # when the first batch holding one of its items started


@dataclass(eq=False)
class _Item(Generic[T]):
    payload: T
    tokens: int
    request: _Request
    index: int  # position in the request's results


@dataclass
class BatchStats:
    """Per-request timing, for the x-queue-time / x-inference-time headers."""

    queue_ms: float = 0.0
    inference_ms: float = 0.0
    tokens: int = 0


@dataclass(eq=False)
class _LaneState(Generic[T]):
    token_budget: int
    max_queued_tokens: int
    queue: deque[_Item[T]] = field(default_factory=deque)
    # Batches cut from the last window, not yet run (only the worker touches these).
    planned: deque[list[_Item[T]]] = field(default_factory=deque)
    queued_tokens: int = 0  # queued + planned, until their batch has run


class Batcher(Generic[T, R]):
    def __init__(
        self,
        name: str,
        run: Callable[[list[T]], Sequence[R]],
        *,
        token_budget: int,
        max_items: int,
        max_queued_tokens: int,
        max_queued_bulk_tokens: int | None = None,
        bulk_token_budget: int | None = None,
        bulk_every: int = 4,
        background: BackgroundRunner[T, R] | None = None,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.name = name
        self.token_budget = token_budget
        self.max_items = max_items
        self.max_queued_tokens = max_queued_tokens
        self.bulk_every = max(1, bulk_every)
        self._on_batch = on_batch
        self._lanes: dict[Lane, _LaneState[T]] = {
            "interactive": _LaneState(token_budget, max_queued_tokens),
            "bulk": _LaneState(
                bulk_token_budget or token_budget,
                max_queued_bulk_tokens if max_queued_bulk_tokens is not None else max_queued_tokens,
            ),
        }
        self._passes_since_bulk = 0
        self._background = background
        self._bulk_running = 0  # bulk passes in progress on the background threads
        lock = threading.Lock()  # guards the lanes
        self._cond = threading.Condition(lock)  # wakes the model worker
        # The background threads wait on their own condition (same lock), so interactive
        # requests do not wake them and bulk requests do not wake the model worker.
        self._wake: dict[Lane, threading.Condition] = {
            "interactive": self._cond,
            "bulk": threading.Condition(lock) if background else self._cond,
        }
        self._closed = False
        # Recent throughput estimate (tokens/s), to size Retry-After sensibly.
        self._tokens_per_s = 0.0
        # The model worker serves both lanes, or only the interactive one when bulk passes run
        # on a background runner's threads.
        own: tuple[Lane, ...] = ("interactive",) if background else LANES
        self._threads = [
            threading.Thread(
                target=self._loop, args=(own, run, 0), name=f"batcher-{name}", daemon=True
            )
        ]
        if background is not None:
            self._threads += [
                threading.Thread(
                    target=self._loop,
                    args=(("bulk",), background.run, background.nice),
                    name=f"batcher-{name}-bulk-{k}",
                    daemon=True,
                )
                for k in range(max(1, background.threads))
            ]
        for t in self._threads:
            t.start()

    @property
    def queued_tokens(self) -> int:
        return sum(s.queued_tokens for s in self._lanes.values())

    @property
    def bulk_runner(self) -> str:
        """Where bulk passes run: "background" (own low-priority threads) or "shared"."""
        return "background" if self._background is not None else "shared"

    def lane_queued_tokens(self, lane: Lane) -> int:
        return self._lanes[lane].queued_tokens

    def retry_after_s(self, lane: Lane = "interactive") -> float:
        if self._tokens_per_s <= 0:
            return 1.0
        # Bulk work waits for everything queued; interactive work only for its own lane.
        ahead = self.queued_tokens if lane == "bulk" else self._lanes[lane].queued_tokens
        return max(1.0, min(30.0, ahead / self._tokens_per_s))

    async def submit(
        self, payloads: Sequence[T], tokens: Sequence[int], lane: Lane = "interactive"
    ) -> tuple[list[R], BatchStats]:
        """Queue `payloads` (with their token counts) in `lane` and wait for all their results."""
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        total = sum(tokens)
        if not payloads:
            return [], BatchStats()
        request = _Request(loop.create_future(), loop, [None] * len(payloads), len(payloads))
        items = [
            _Item(p, t, request, k) for k, (p, t) in enumerate(zip(payloads, tokens, strict=True))
        ]
        state = self._lanes[lane]
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name} batcher is stopped")
            # One request is always admitted when its lane is empty, however large.
            if state.queued_tokens and state.queued_tokens + total > state.max_queued_tokens:
                raise Overloaded(self.retry_after_s(lane), lane)
            state.queue.extend(items)
            state.queued_tokens += total
            self._wake[lane].notify_all()
        try:
            await request.future
        except asyncio.CancelledError:
            # The client went away: items not started yet are skipped by the worker.
            request.future.cancel()
            raise
        done = time.perf_counter()
        return request.results, BatchStats(
            queue_ms=(request.started - now) * 1000,
            inference_ms=(done - request.started) * 1000,
            tokens=total,
        )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for wake in self._wake.values():
                wake.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    # -- worker thread -------------------------------------------------------------------------

    def _has_work(self, lane: Lane) -> bool:
        s = self._lanes[lane]
        return bool(s.planned or s.queue)

    def _pick_lane(self, lanes: tuple[Lane, ...]) -> Lane | None:
        """Interactive first; while both lanes wait, every bulk_every-th pass goes to bulk."""
        if len(lanes) == 1:
            lane = lanes[0]
            if not self._has_work(lane) or (lane == "interactive" and self._bulk_owed()):
                return None
            return lane
        interactive, bulk = self._has_work("interactive"), self._has_work("bulk")
        if interactive and bulk:
            if self._passes_since_bulk >= self.bulk_every - 1:
                return "bulk"
            return "interactive"
        if not (interactive or bulk):
            return None
        return "interactive" if interactive else "bulk"

    def _bulk_owed(self) -> bool:
        """With a background runner: interactive passes have kept bulk from finishing a pass
        for `yield_after` passes, so the model worker waits for one to finish."""
        bg = self._background
        return (
            bg is not None
            and (self._bulk_running > 0 or self._has_work("bulk"))
            and self._passes_since_bulk >= bg.yield_after
        )

    def _next_batch(self, lanes: tuple[Lane, ...]) -> tuple[Lane, list[_Item[T]]] | None:
        wake = self._wake[lanes[-1]]
        with self._cond:
            while not self._closed and (lane := self._pick_lane(lanes)) is None:
                wake.wait()
            if self._closed or lane is None:
                return None
            if lane == "bulk":
                self._passes_since_bulk = 0
                if self._background is not None:
                    self._bulk_running += 1
            elif self._has_work("bulk") or self._bulk_running:
                self._passes_since_bulk += 1  # an interactive pass that bulk work waited for
            state = self._lanes[lane]
            if not state.planned:
                # A window of a few batches' worth of tokens, oldest first: long enough to sort
                # by length usefully; only one batch of it runs before the lanes are looked at
                # again, so the window never holds back newer interactive work.
                window: list[_Item[T]] = []
                budget = state.token_budget * 8
                while state.queue and (not window or budget > 0):
                    item = state.queue.popleft()
                    budget -= item.tokens
                    window.append(item)
                lengths = [i.tokens for i in window]
                for idx in plan_batches(lengths, state.token_budget, self.max_items):
                    state.planned.append([window[j] for j in idx])
            return lane, state.planned.popleft()

    def _loop(
        self, lanes: tuple[Lane, ...], run: Callable[[list[T]], Sequence[R]], nice: int
    ) -> None:
        if nice:
            lower_thread_priority(nice)
        while True:
            picked = self._next_batch(lanes)
            if picked is None:
                return
            lane, batch = picked
            try:
                self._run_batch(batch, lane, run)
            finally:
                if lane == "bulk" and self._background is not None:
                    with self._cond:
                        self._bulk_running -= 1
                        self._passes_since_bulk = 0
                        self._cond.notify()  # the model worker, if it waits for this pass

    def _run_batch(
        self, batch: list[_Item[T]], lane: Lane, run: Callable[[list[T]], Sequence[R]]
    ) -> None:
        dropped = sum(i.tokens for i in batch if i.request.future.cancelled())
        batch = [i for i in batch if not i.request.future.cancelled()]
        if dropped:
            self._release(lane, dropped)
        if not batch:
            return
        start = time.perf_counter()
        for i in batch:
            if not i.request.started:
                i.request.started = start
        tokens = sum(i.tokens for i in batch)
        # One call_soon_threadsafe per event loop and batch (each one wakes that loop), not one
        # per item: under load a batch holds dozens of single-text requests.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Item[T]]] = {}
        for i in batch:
            by_loop.setdefault(i.request.loop, []).append(i)
        try:
            results = run([i.payload for i in batch])
        except Exception as exc:  # the model failed: fail these requests, keep serving
            log.exception("batch failed", extra={"batcher": self.name, "size": len(batch)})
            for loop, items in by_loop.items():
                loop.call_soon_threadsafe(_fail, items, exc)
        else:
            for i, r in zip(batch, results, strict=True):
                i.request.results[i.index] = r
            for loop, items in by_loop.items():
                loop.call_soon_threadsafe(_deliver, items)
        elapsed = time.perf_counter() - start
        self._release(lane, tokens)
        if elapsed > 0:
            rate = tokens / elapsed
            self._tokens_per_s = (
                rate if not self._tokens_per_s else 0.8 * self._tokens_per_s + 0.2 * rate
            )
        if self._on_batch is not None:
            self._on_batch(len(batch), max(i.tokens for i in batch) * len(batch), elapsed)

    def _release(self, lane: Lane, tokens: int) -> None:
        with self._cond:
            self._lanes[lane].queued_tokens -= tokens


def _deliver(items: list[_Item[Any]]) -> None:
    """In the event loop: count the items' results in; a request completes with its last one."""
    for i in items:
        request = i.request
        request.pending -= 1
        if not request.pending and not request.future.done():
            request.future.set_result(None)


def _fail(items: list[_Item[Any]], exc: BaseException) -> None:
    for i in items:
        if not i.request.future.done():
            i.request.future.set_exception(exc)
