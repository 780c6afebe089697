"""The token-budget batcher on its own: planning, merging concurrent requests, admission."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable

import pytest

from serving.batcher import BackgroundRunner, Batcher, Overloaded, plan_batches

pytestmark = pytest.mark.anyio


def test_plan_batches_respects_padded_budget_and_item_cap() -> None:
    lengths = [5, 100, 7, 6, 90, 8, 300]
    batches = plan_batches(lengths, token_budget=200, max_items=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) <= 3
        assert longest * len(b) <= 200 or len(b) == 1
    # Short texts are not padded to the long ones.
    for b in batches:
        assert not ({0, 2, 3, 5} & set(b) and {1, 4, 6} & set(b))
    # An item over the budget still runs, alone.
    assert [6] in batches


def test_plan_batches_empty() -> None:
    assert plan_batches([], 100, 10) == []


def _echo_batcher(calls: list[list[int]], delay: float = 0.0, **kw: int) -> Batcher[int, int]:
    def run(batch: list[int]) -> list[int]:
        calls.append(list(batch))
        time.sleep(delay)
        return [x * 10 for x in batch]

    params = {"token_budget": 1000, "max_items": 64, "max_queued_tokens": 10_000, **kw}
    return Batcher("test", run, **params)


async def test_results_come_back_in_request_order() -> None:
    calls: list[list[int]] = []
    b = _echo_batcher(calls)
    try:
        results, stats = await b.submit([3, 1, 2], [30, 10, 20])
        assert results == [30, 10, 20]
        assert stats.tokens == 60
        assert stats.inference_ms >= 0 and stats.queue_ms >= 0
    finally:
        b.close()


async def test_concurrent_requests_share_batches() -> None:
    calls: list[list[int]] = []
    b = _echo_batcher(calls, delay=0.05)
    try:
        outs = await asyncio.gather(*(b.submit([i], [10]) for i in range(32)))
        assert [r for r, _ in outs] == [[i * 10] for i in range(32)]
        # While the first batch computes the rest queue up and go together: far fewer calls.
        assert len(calls) < 8
        assert max(len(c) for c in calls) > 1
    finally:
        b.close()


async def test_overload_is_refused_with_retry_after() -> None:
    gate = threading.Event()

    def run(batch: list[int]) -> list[int]:
        gate.wait(5)
        return batch

    b: Batcher[int, int] = Batcher(
        "slow", run, token_budget=100, max_items=8, max_queued_tokens=100
    )
    try:
        first = asyncio.create_task(b.submit([1], [80]))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as exc:
            await b.submit([2], [80])
        assert exc.value.retry_after_s >= 1
        gate.set()
        assert (await first)[0] == [1]
    finally:
        gate.set()
        b.close()


async def test_model_error_fails_only_that_batch() -> None:
    def run(batch: list[int]) -> list[int]:
        if -1 in batch:
            raise ValueError("bad item")
        return batch

    b: Batcher[int, int] = Batcher("err", run, token_budget=10, max_items=1, max_queued_tokens=100)
    try:
        with pytest.raises(ValueError):
            await b.submit([-1], [1])
        assert (await b.submit([5], [1]))[0] == [5]
    finally:
        b.close()


async def test_cancelled_requests_are_not_computed() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def run(batch: list[int]) -> list[int]:
        calls.append(list(batch))
        gate.wait(5)
        return batch

    b: Batcher[int, int] = Batcher("c", run, token_budget=10, max_items=1, max_queued_tokens=100)
    try:
        busy = asyncio.create_task(b.submit([1], [1]))
        await asyncio.sleep(0.05)
        doomed = asyncio.create_task(b.submit([2], [1]))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await asyncio.sleep(0.05)
        gate.set()
        await busy
        assert (await b.submit([3], [1]))[0] == [3]
        assert [2] not in calls
    finally:
        gate.set()
        b.close()


# -- priority lanes --------------------------------------------------------------------------------


def _gated_batcher(calls: list[list[int]], gate: threading.Event, **kw: int) -> Batcher[int, int]:
    """Each forward pass records its items; the first one blocks until `gate` is set, so the
    test can queue work behind it and then watch the order the rest runs in."""

    def run(batch: list[int]) -> list[int]:
        calls.append(list(batch))
        gate.wait(5)
        return batch

    params = {"token_budget": 10, "max_items": 1, "max_queued_tokens": 10_000, **kw}
    return Batcher("lanes", run, **params)


async def _until_running(calls: list[list[int]], n: int = 1) -> None:
    for _ in range(500):
        if len(calls) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the batcher never started the first batch")


async def test_interactive_overtakes_queued_bulk_and_bulk_completes() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()
    b = _gated_batcher(calls, gate, bulk_every=1000)
    try:
        first = asyncio.create_task(b.submit([0], [1], "bulk"))
        await _until_running(calls)
        bulk = asyncio.create_task(b.submit(list(range(100, 120)), [1] * 20, "bulk"))
        await asyncio.sleep(0.02)
        query = asyncio.create_task(b.submit([7], [1]))  # unmarked = interactive
        await asyncio.sleep(0.02)
        gate.set()
        assert (await query)[0] == [7]
        assert (await bulk)[0] == list(range(100, 120))
        await first
        # The query ran in the very next pass, ahead of all 20 queued bulk items.
        assert calls[1] == [7]
        assert sorted(x for c in calls[2:] for x in c) == list(range(100, 120))
    finally:
        gate.set()
        b.close()


async def test_interactive_gets_the_next_pass_inside_a_planned_bulk_window() -> None:
    # The bulk items fit one window (8x the budget) that is planned as many batches; the query
    # must not wait for the rest of that window.
    calls: list[list[int]] = []
    gate = threading.Event()
    b = _gated_batcher(calls, gate, bulk_every=1000, token_budget=100)
    try:
        bulk = asyncio.create_task(b.submit(list(range(100, 110)), [1] * 10, "bulk"))
        await _until_running(calls)
        query = asyncio.create_task(b.submit([7], [1]))
        await asyncio.sleep(0.02)
        gate.set()
        await asyncio.gather(query, bulk)
        assert calls[0] == [100] and calls[1] == [7]
        assert sorted(x for c in calls for x in c) == [7, *range(100, 110)]
    finally:
        gate.set()
        b.close()


async def test_bulk_keeps_a_share_under_interactive_load() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()
    b = _gated_batcher(calls, gate, bulk_every=3)
    try:
        first = asyncio.create_task(b.submit([0], [1]))
        await _until_running(calls)
        bulk = asyncio.create_task(b.submit([100, 101], [1, 1], "bulk"))
        await asyncio.sleep(0.02)
        queries = asyncio.create_task(b.submit(list(range(1, 13)), [1] * 12))
        await asyncio.sleep(0.02)
        gate.set()
        await asyncio.gather(first, bulk, queries)
        order = [c[0] for c in calls]
        # Every third pass goes to bulk while both lanes wait: bulk is not starved by the 12
        # queued interactive items.
        assert order.index(100) == 3 and order.index(101) == 6
    finally:
        gate.set()
        b.close()


async def test_each_lane_has_its_own_admission_bound() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()
    b = _gated_batcher(calls, gate, max_queued_tokens=1000, max_queued_bulk_tokens=100)
    try:
        running = asyncio.create_task(b.submit([1], [80], "bulk"))
        await _until_running(calls)
        with pytest.raises(Overloaded) as exc:
            await b.submit([2], [80], "bulk")
        assert exc.value.lane == "bulk" and exc.value.retry_after_s >= 1
        # A full bulk lane does not refuse interactive work.
        query = asyncio.create_task(b.submit([3], [80]))
        await asyncio.sleep(0.02)
        gate.set()
        assert (await query)[0] == [3]
        await running
    finally:
        gate.set()
        b.close()


# -- a background runner for the bulk lane ------------------------------------------------------


def _background_batcher(
    calls: list[tuple[str, list[int]]], bulk_gate: threading.Event, **kw: int
) -> Batcher[int, int]:
    """Interactive passes run at once; bulk passes (on the runner's thread) wait for the gate."""

    def interactive(batch: list[int]) -> list[int]:
        calls.append(("interactive", list(batch)))
        return [x * 10 for x in batch]

    def bulk(batch: list[int]) -> list[int]:
        calls.append(("bulk", list(batch)))
        bulk_gate.wait(30)
        return [x * 100 for x in batch]

    yield_after = kw.pop("yield_after", 32)
    runner = BackgroundRunner(bulk, threads=1, nice=5, yield_after=yield_after)
    params = {"token_budget": 10, "max_items": 1, "max_queued_tokens": 10_000, **kw}
    return Batcher("bg", interactive, background=runner, **params)


async def test_background_bulk_pass_in_progress_does_not_hold_back_interactive() -> None:
    calls: list[tuple[str, list[int]]] = []
    gate = threading.Event()
    b = _background_batcher(calls, gate)
    try:
        bulk = asyncio.create_task(b.submit([1, 2], [1, 1], "bulk"))
        for _ in range(500):
            if calls:
                break
            await asyncio.sleep(0.01)
        assert calls == [("bulk", [1])]
        # The bulk pass is still running (gate closed): the query is answered anyway, by the
        # model worker's own callable.
        results, _ = await asyncio.wait_for(b.submit([7, 8], [1, 1]), 30)
        assert results == [70, 80]
        assert not bulk.done()
        gate.set()
        assert (await bulk)[0] == [100, 200]
    finally:
        gate.set()
        b.close()


async def test_background_bulk_threads_run_at_a_lower_priority() -> None:
    if sys.platform != "linux":
        pytest.skip("per-thread niceness is Linux's")
    seen: dict[str, int] = {}

    def record(lane: str) -> Callable[[list[int]], list[int]]:
        def run(batch: list[int]) -> list[int]:
            seen[lane] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            return batch

        return run

    base = os.getpriority(os.PRIO_PROCESS, 0)
    b: Batcher[int, int] = Batcher(
        "nice",
        record("interactive"),
        token_budget=10,
        max_items=4,
        max_queued_tokens=100,
        background=BackgroundRunner(record("bulk"), threads=2, nice=7),
    )
    try:
        await b.submit([1], [1], "bulk")
        await b.submit([2], [1])
    finally:
        b.close()
    assert seen == {"interactive": base, "bulk": min(19, base + 7)}
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the process itself is untouched


async def test_background_bulk_keeps_a_share_under_interactive_load() -> None:
    """While a bulk pass cannot finish, the model worker runs `yield_after` interactive passes
    and then waits for it, so a flood of interactive work cannot starve bulk."""
    calls: list[tuple[str, list[int]]] = []
    gate = threading.Event()
    b = _background_batcher(calls, gate, yield_after=3)
    try:
        bulk = asyncio.create_task(b.submit([1], [1], "bulk"))
        for _ in range(500):
            if calls:
                break
            await asyncio.sleep(0.01)
        queries = asyncio.create_task(b.submit(list(range(10, 16)), [1] * 6))
        for _ in range(500):
            if len(calls) >= 4:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # had the worker not waited, more passes would show here
        assert [lane for lane, _ in calls] == ["bulk", "interactive", "interactive", "interactive"]
        assert not queries.done()
        gate.set()
        assert (await bulk)[0] == [100]
        assert (await queries)[0] == [x * 10 for x in range(10, 16)]
    finally:
        gate.set()
        b.close()
