"""Priority lanes through a real `bentoml serve` (tiny models): `X-Priority: bulk` work waits
behind interactive work, is bounded by its own queue limit, and still completes. Order is
asserted, not times."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import StartMLApi

pytestmark = pytest.mark.anyio
BULK = {"X-Priority": "bulk"}


@pytest.fixture(scope="module", params=["background", "shared"])
def one_item_passes(start_ml_api: StartMLApi, request: pytest.FixtureRequest) -> str:
    # One item per forward pass: a bulk request of 2,000 texts takes 2,000 passes, so a query
    # sent while it runs can only finish first if it overtakes the queued bulk items. Both
    # places bulk passes can run: their own low-priority threads (the CPU default), or the
    # model worker's alternation of the lanes.
    api = start_ml_api(
        ml_api_max_batch_items="1",
        ml_api_max_queued_bulk_tokens="1000",
        ml_api_bulk_runner=request.param,
    )
    info = httpx.get(f"{api.url}/info", timeout=10).json()
    assert info["limits"]["embed_bulk_runner"] == request.param
    return api.url


async def _queued_tokens(client: httpx.AsyncClient) -> int:
    body = (await client.get("/info")).json()
    return int(body["queue"]["embed_queued_bulk_tokens"])


async def test_query_overtakes_queued_bulk_work_and_bulk_completes(one_item_passes: str) -> None:
    texts = [f"bulk text number {i}" for i in range(2000)]
    async with httpx.AsyncClient(base_url=one_item_passes, timeout=120) as client:
        bulk = asyncio.create_task(client.post("/embed", json={"inputs": texts}, headers=BULK))
        for _ in range(500):
            if await _queued_tokens(client) > 0 or bulk.done():
                break
            await asyncio.sleep(0.005)
        assert not bulk.done(), "the bulk request finished before the query could be sent"
        # A second bulk request is refused while the first fills the bulk lane (backpressure)...
        refused = await client.post("/embed", json={"inputs": ["more bulk"]}, headers=BULK)
        assert refused.status_code == 429
        assert float(refused.headers["Retry-After"]) >= 1
        assert "bulk lane" in refused.json()["error"]
        # ...while an unmarked request (interactive) is admitted and answered first.
        query = await client.post("/embed", json={"inputs": "what is a query?"})
        assert query.status_code == 200 and len(query.json()) == 1
        assert not bulk.done(), "the query waited for the bulk request"
        done = await bulk
        assert done.status_code == 200 and len(done.json()) == len(texts)


def test_priority_header_is_validated_and_documented(ml_api: str) -> None:
    bad = httpx.post(
        f"{ml_api}/v1/embeddings", json={"input": "x"}, headers={"X-Priority": "urgent"}, timeout=30
    )
    assert bad.status_code == 422
    assert "X-Priority" in bad.json()["error"]["message"]
    ok = httpx.post(
        f"{ml_api}/embed", json={"inputs": "x"}, headers={"X-Priority": "Interactive"}, timeout=30
    )
    assert ok.status_code == 200
    spec = httpx.get(f"{ml_api}/docs.json", timeout=10).json()
    params = spec["paths"]["/embed"]["post"]["parameters"]
    assert any(p["name"] == "X-Priority" and p["in"] == "header" for p in params)
