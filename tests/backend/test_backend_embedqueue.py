"""The ingest embedding queue and the patient bulk calls, against scripted HTTP answers
(httpx.MockTransport): this tests our client's batching and pacing, not a model. The
six-document case through the real stack is in test_backend_integration.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from backend.ingest.embedqueue import EmbedQueue
from backend.mlapi import MLAPIError, MLClient
from backend.settings import Settings

pytestmark = pytest.mark.anyio


def client(handler: object, **overrides: object) -> MLClient:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ml_api_url="http://ml-api.test",
        ml_api_backoff_s=0.01,
        **overrides,  # type: ignore[arg-type]
    )
    return MLClient(settings, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


def vectors_for(request: httpx.Request) -> httpx.Response:
    texts = json.loads(request.content)["inputs"]
    return httpx.Response(200, json=[[float(len(t)), 0.0] for t in texts])


async def test_lone_document_goes_at_once_and_concurrent_documents_share_requests() -> None:
    requests: list[list[str]] = []
    priorities: set[str | None] = set()
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(json.loads(request.content)["inputs"])
        priorities.add(request.headers.get("X-Priority"))
        if len(requests) == 1:
            await release.wait()  # the only request slot stays busy while others queue up
        return vectors_for(request)

    ml = client(handler)
    queue = EmbedQueue(ml, batch_size=64, concurrency=1)
    try:
        lone = asyncio.create_task(queue.embed(["a", "bb", "ccc"]))
        while not requests:
            await asyncio.sleep(0.001)
        # The lone document's request left with its own 3 texts, without waiting for company.
        assert requests == [["a", "bb", "ccc"]]
        docs = [[f"doc{d}-chunk{c}" for c in range(10)] for d in range(4)]
        pending = [asyncio.create_task(queue.embed(texts)) for texts in docs]
        await asyncio.sleep(0.02)
        release.set()
        assert await lone == [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]
        results = await asyncio.gather(*pending)
        for texts, vectors in zip(docs, results, strict=True):
            assert [v[0] for v in vectors] == [float(len(t)) for t in texts]
        # The 40 chunks of the four concurrent documents went out as one request.
        assert len(requests) == 2 and sorted(requests[1]) == sorted(t for d in docs for t in d)
        assert priorities == {"bulk"}
    finally:
        await queue.close()
        await ml.aclose()


async def test_requests_are_full_and_bounded_in_flight() -> None:
    sizes: list[int] = []
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        sizes.append(len(json.loads(request.content)["inputs"]))
        return vectors_for(request)

    ml = client(handler)
    queue = EmbedQueue(ml, batch_size=8, concurrency=2)
    try:
        await asyncio.gather(*(queue.embed([f"d{d}c{c}" for c in range(5)]) for d in range(8)))
        assert sum(sizes) == 40 and peak <= 2
        assert sizes.count(8) >= 4  # 40 chunks of 8 documents in full requests of 8
    finally:
        await queue.close()
        await ml.aclose()


async def test_bulk_waits_out_load_refusals_and_timeouts_beyond_the_retry_count() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 6:
            body = {"error": "the ml-api's bulk lane is at capacity", "error_type": "Overloaded"}
            return httpx.Response(429, json=body, headers={"Retry-After": "0"})
        if calls <= 8:
            raise httpx.ReadTimeout("slow", request=request)
        return vectors_for(request)

    ml = client(handler, ml_api_retries=2)
    try:
        assert await ml.embed_bulk(["abcd"]) == [[4.0, 0.0]]
        assert calls == 9
    finally:
        await ml.aclose()


async def test_interactive_calls_still_give_up_after_the_retry_count() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    ml = client(handler, ml_api_retries=2)
    try:
        with pytest.raises(MLAPIError, match="timed out"):
            await ml.embed(["abcd"])
    finally:
        await ml.aclose()


async def test_a_real_client_error_fails_only_the_documents_in_that_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        texts = json.loads(request.content)["inputs"]
        if "bad" in texts:
            return httpx.Response(422, json={"error": "inputs[0] is empty", "error_type": "x"})
        return vectors_for(request)

    ml = client(handler)
    queue = EmbedQueue(ml, batch_size=1, concurrency=1)
    try:
        with pytest.raises(MLAPIError, match="inputs\\[0\\] is empty"):
            await queue.embed(["bad"])
        assert await queue.embed(["ok"]) == [[2.0, 0.0]]
    finally:
        await queue.close()
        await ml.aclose()
