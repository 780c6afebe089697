"""The backend asks for the embedder's query prompt for queries and its document prompt for
chunks, when the model declares them (scripted ml-api answers; the ml-api side of prompts is
tested against the real service in tests/serving/test_prompts.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from backend.mlapi import MLClient
from backend.settings import Settings

pytestmark = pytest.mark.anyio


def client(prompts: dict[str, str], seen: list[dict]) -> MLClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            emb = {"name": "e", "tag": "e:1", "dimension": 2, "max_length": 8, "prompts": prompts}
            return httpx.Response(200, json={"status": "ok", "models": {"embedder": emb}})
        body = json.loads(request.content)
        seen.append(body)
        return httpx.Response(200, json=[[1.0, 0.0] for _ in body["inputs"]])

    settings = Settings(_env_file=None, ml_api_url="http://ml-api.test")  # type: ignore[call-arg]
    return MLClient(settings, transport=httpx.MockTransport(handler))


async def test_query_and_document_prompts_are_chosen_by_role() -> None:
    seen: list[dict] = []
    ml = client({"query": "query: ", "passage": "passage: "}, seen)
    await ml.model_info()  # as the backend does at start, for the dimension
    await ml.embed(["a chunk"])
    await ml.embed(["a question"], query=True)
    assert [b.get("prompt_name") for b in seen] == ["passage", "query"]
    await ml.aclose()


async def test_no_prompt_name_for_a_symmetric_model() -> None:
    seen: list[dict] = []
    ml = client({}, seen)
    await ml.model_info()
    await ml.embed(["a chunk"])
    await ml.embed(["a question"], query=True)
    assert all("prompt_name" not in b for b in seen)
    await ml.aclose()
