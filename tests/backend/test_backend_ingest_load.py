"""Concurrent ingestion against a busy ml-api (real `bentoml serve`, tiny embedder, real
backend): documents are paced by the ml-api's bulk-lane 429s, never failed by them."""

from __future__ import annotations

import pytest
from backend_support import StartBackend


def report(i: int, sentences: int = 1400) -> bytes:
    return " ".join(
        f"Report {i}, sentence {s}: the tide gauge at station {s % 97} read {s % 13} metres."
        for s in range(sentences)
    ).encode()


@pytest.fixture(scope="module")
def busy_ml_api(start_ml_api: object) -> str:
    # One item per forward pass and a bulk lane that holds about one request: the backend's
    # ingest calls are refused with 429 + Retry-After most of the time and must wait.
    return start_ml_api(  # type: ignore[operator]
        ml_api_max_batch_items="1", ml_api_max_queued_bulk_tokens="4000"
    ).url


def test_six_large_documents_uploaded_together_are_all_indexed(
    busy_ml_api: str, start_backend: StartBackend
) -> None:
    b = start_backend(ml_api_url=busy_ml_api)  # otherwise default settings
    resp = b.upload(*[(f"report{i}.txt", report(i)) for i in range(6)])
    assert resp.status_code == 202, resp.text
    ids = [d["id"] for d in resp.json()["documents"]]
    docs = [b.wait(i, timeout=600) for i in ids]
    for doc in docs:
        assert doc["status"] == "indexed", doc
        assert doc["chunk_count"] >= 200, doc
    # The pacing really came from the ml-api's backpressure, not from an idle ml-api.
    assert "HTTP 429" in b.log()
    assert b.query("tide gauge station").status_code == 200
