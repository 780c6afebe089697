"""The ml-api client's own logic (retry, backoff, Retry-After, batching, error mapping) against
scripted HTTP answers from httpx.MockTransport. This tests our client, not a model: no test of
the backend's behaviour uses a stand-in ml-api; test_backend_api.py and
test_backend_integration.py run against the real one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest

from backend.mlapi import MLAPIError, MLAPIUnavailable, MLClient, RerankerUnavailable
from backend.settings import Settings

pytestmark = pytest.mark.anyio
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **overrides: object) -> MLClient:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ml_api_url="http://ml-api.test",
        ml_api_backoff_s=0.01,
        **overrides,  # type: ignore[arg-type]
    )
    return MLClient(settings, transport=httpx.MockTransport(handler))


def embed_ok(request: httpx.Request) -> httpx.Response:
    texts = json.loads(request.content)["inputs"]
    return httpx.Response(200, json=[[float(len(t)), 0.0] for t in texts])


async def test_embed_splits_into_requests_and_keeps_order() -> None:
    sizes: list[int] = []
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        resp = embed_ok(request)
        sizes.append(len(resp.json()))
        return resp

    ml = client(handler, embed_batch_size=3, embed_concurrency=2)  # type: ignore[arg-type]
    texts = ["x" * i for i in range(1, 11)]
    vectors = await ml.embed(texts)
    assert [v[0] for v in vectors] == [float(i) for i in range(1, 11)]
    assert sorted(sizes) == [1, 3, 3, 3]
    assert peak == 2
    await ml.aclose()


async def test_retries_503_and_429_honouring_retry_after() -> None:
    answers = [
        httpx.Response(503, json={"error": "loading"}, headers={"Retry-After": "0.2"}),
        httpx.Response(429, json={"error": "busy"}, headers={"Retry-After": "0"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else embed_ok(request)

    ml = client(handler)
    started = time.monotonic()
    assert await ml.embed(["abc"]) == [[3.0, 0.0]]
    assert time.monotonic() - started >= 0.2
    await ml.aclose()


async def test_connection_errors_exhaust_retries() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    ml = client(handler, ml_api_retries=3)
    with pytest.raises(MLAPIUnavailable, match="ConnectError"):
        await ml.embed(["a"])
    assert calls == 4
    await ml.aclose()


async def test_client_errors_are_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(422, json={"error": "inputs[0] is empty", "error_type": "Validation"})

    ml = client(handler)
    with pytest.raises(MLAPIError, match="inputs\\[0\\] is empty") as err:
        await ml.embed([""])
    assert calls == 1 and err.value.status == 422
    await ml.aclose()


async def test_no_reranker_is_not_retried_and_is_remembered() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        body = {"error": "no reranker model is loaded; import one", "error_type": "Unhealthy"}
        return httpx.Response(503, json=body)

    ml = client(handler)
    for _ in range(2):
        with pytest.raises(RerankerUnavailable):
            await ml.rerank("q", ["a", "b"])
    assert calls == 1
    await ml.aclose()


async def test_rerank_and_model_info_shapes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer s3cret"
        if request.url.path == "/health":
            emb = {"name": "e", "tag": "e:1", "dimension": 384, "max_length": 256}
            return httpx.Response(200, json={"status": "ok", "models": {"embedder": emb}})
        return httpx.Response(200, json=[{"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}])

    ml = client(handler, ml_api_key="s3cret")
    assert await ml.rerank("q", ["a", "b"]) == [(1, 0.9), (0, 0.1)]
    info = await ml.model_info()
    assert (info.dimension, info.max_length, info.reranker) == (384, 256, None)
    await ml.aclose()


async def test_unavailable_carries_the_ml_api_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"error": "queue full"}, headers={"Retry-After": "7"})

    ml = client(handler, ml_api_retries=0)
    with pytest.raises(MLAPIUnavailable, match="HTTP 429: queue full") as err:
        await ml.embed(["a"])
    assert err.value.retry_after == 7.0
    await ml.aclose()


async def test_availability_probe_is_cached_after_a_success() -> None:
    paths: list[str] = []
    healthy = True

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if not healthy:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"status": "ok"})

    ml = client(handler)
    await ml.ensure_available()
    await ml.ensure_available()
    assert paths == ["/health"]  # the second call trusts the recent answer
    ml._ok_at = float("-inf")  # as if the last answer were old
    healthy = False
    with pytest.raises(MLAPIUnavailable, match="ConnectError") as err:
        await ml.ensure_available()
    assert err.value.retry_after > 0
    assert paths == ["/health", "/health"]  # a probe is not retried
    await ml.aclose()
