"""A failing batch is retried item by item: only the item the model fails on gets an error."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.batcher import Batcher
from serving.errors import APIError
from serving.validation import ItemFailed, check_token_ids, isolating, raise_failed

pytestmark = pytest.mark.anyio


async def test_poisoned_batch_fails_only_the_culprit() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def run(batch: list[int]) -> list[int]:
        calls.append(list(batch))
        gate.wait(5)
        if any(x < 0 for x in batch):
            raise IndexError("indices element out of data bounds")
        return [x * 10 for x in batch]

    b: Batcher[int, object] = Batcher(
        "iso", isolating(run), token_budget=1000, max_items=64, max_queued_tokens=10_000
    )
    try:
        # Hold the worker on a first request so the next four queue up and share one batch.
        first = asyncio.ensure_future(b.submit([0], [1]))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(b.submit([x], [1])) for x in (1, 2, -3, 4)]
        await asyncio.sleep(0.05)
        gate.set()
        assert (await first)[0] == [0]
        results = [(await r)[0][0] for r in rest]
        assert [results[i] for i in (0, 1, 3)] == [10, 20, 40]
        assert isinstance(results[2], ItemFailed)
        assert [1, 2, -3, 4] in calls  # they really were batched together
        with pytest.raises(APIError) as exc:
            raise_failed([results[2]], "input")
        assert exc.value.status == 422 and "input[0]" in exc.value.message
    finally:
        gate.set()
        b.close()


def test_token_ids_checked_against_the_vocabulary() -> None:
    check_token_ids([[0, 5, 9]], 10, "input")
    for bad, where in (([[1, 10]], "input[0][1] = 10"), ([[1], [2, -1]], "input[1][1] = -1")):
        with pytest.raises(APIError) as exc:
            check_token_ids(bad, 10, "input")
        assert exc.value.status == 422 and where in exc.value.message
        assert "vocabulary of 10" in exc.value.message
