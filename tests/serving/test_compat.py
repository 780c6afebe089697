"""Drop-in compatibility, checked with the official clients against the real ml-api."""

from __future__ import annotations

import base64

import cohere
import httpx
import numpy as np
import openai
import pytest

TEXTS = ["The cat sat on the mat.", "Vectors live in Qdrant.", "word " * 400]


def embed(url: str, texts: list[str]) -> np.ndarray:
    r = httpx.post(f"{url}/embed", json={"inputs": texts}, timeout=60)
    assert r.status_code == 200, r.text
    return np.array(r.json())


@pytest.fixture(scope="module")
def oai(ml_api: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{ml_api}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def co(ml_api: str) -> cohere.ClientV2:
    return cohere.ClientV2(api_key="unused", base_url=ml_api)


def test_openai_default_call_uses_base64_and_matches_embed(oai: openai.OpenAI, ml_api: str) -> None:
    # The client asks for base64 when the caller does not set encoding_format.
    res = oai.embeddings.create(model="tiny-embedder", input=TEXTS)
    got = np.array([d.embedding for d in res.data])
    assert np.abs(got - embed(ml_api, TEXTS)).max() < 1e-6
    assert [d.index for d in res.data] == [0, 1, 2]
    assert res.model == "tiny-embedder"
    assert res.usage.prompt_tokens == res.usage.total_tokens > 0


def test_openai_float_single_input_and_token_counts(oai: openai.OpenAI, ml_api: str) -> None:
    res = oai.embeddings.create(model="tiny-embedder", input=TEXTS[0], encoding_format="float")
    assert len(res.data) == 1
    assert np.abs(np.array(res.data[0].embedding) - embed(ml_api, TEXTS[:1])[0]).max() < 1e-6
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(httpx.get(f"{ml_api}/tokenizer", timeout=10).text)
    assert res.usage.prompt_tokens == len(tok.encode(TEXTS[0]).ids)


def test_openai_token_id_input(ml_api: str) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(httpx.get(f"{ml_api}/tokenizer", timeout=10).text)
    ids = tok.encode(TEXTS[1]).ids
    r = httpx.post(f"{ml_api}/v1/embeddings", json={"input": [ids], "model": "tiny-embedder"})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["data"][0]["embedding"])
    assert np.abs(got - embed(ml_api, TEXTS[1:2])[0]).max() < 1e-6


def test_openai_raw_base64_is_little_endian_float32(ml_api: str) -> None:
    r = httpx.post(
        f"{ml_api}/embeddings", json={"input": "hello", "encoding_format": "base64"}, timeout=30
    )
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.abs(vec - embed(ml_api, ["hello"])[0]).max() < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"model": "gpt-4", "input": "x"}, openai.NotFoundError, "`gpt-4` does not exist"),
        ({"model": "tiny-embedder", "input": []}, openai.UnprocessableEntityError, "input"),
        (
            {"model": "tiny-embedder", "input": ["x"] * 2049},
            openai.UnprocessableEntityError,
            "2048",
        ),
        (
            {"model": "tiny-embedder", "input": "x", "dimensions": 10_000},
            openai.UnprocessableEntityError,
            "dimensions",
        ),
    ],
)
def test_openai_errors_are_typed(
    oai: openai.OpenAI, kwargs: dict, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as exc:
        oai.embeddings.create(**kwargs)
    body = exc.value.body  # type: ignore[attr-defined]
    assert needle in body["message"], body
    assert body["type"] == "invalid_request_error"


def _tei_scores(url: str, query: str, texts: list[str]) -> dict[int, float]:
    hits = httpx.post(f"{url}/rerank", json={"query": query, "texts": texts}, timeout=60).json()
    return {h["index"]: h["score"] for h in hits}


def test_cohere_v2_rerank_matches_rerank(co: cohere.ClientV2, ml_api: str) -> None:
    docs = ["Cats sit on mats.", "Qdrant is a vector database.", "Bread recipes."]
    res = co.rerank(model="tiny-reranker", query="vector database", documents=docs, top_n=2)
    expected = _tei_scores(ml_api, "vector database", docs)
    assert len(res.results) == 2
    best = sorted(expected, key=expected.get, reverse=True)[:2]
    assert [r.index for r in res.results] == best
    for r in res.results:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=1e-6)


def test_cohere_errors_are_typed(co: cohere.ClientV2) -> None:
    with pytest.raises(cohere.errors.NotFoundError) as exc:
        co.rerank(model="rerank-v3.5", query="q", documents=["a"])
    assert "`rerank-v3.5` does not exist" in str(exc.value.body)
    with pytest.raises(cohere.errors.UnprocessableEntityError) as exc2:
        co.rerank(model="tiny-reranker", query="q", documents=[])
    assert "documents" in str(exc2.value.body)


def test_jina_style_rerank_with_documents_returned(ml_api: str) -> None:
    docs = [{"text": "Cats sit on mats."}, "Qdrant is a vector database."]
    r = httpx.post(
        f"{ml_api}/v1/rerank",
        json={"query": "vector database", "documents": docs, "return_documents": True, "top_n": 1},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    expected = _tei_scores(ml_api, "vector database", ["Cats sit on mats.", docs[1]])
    best = max(expected, key=expected.get)
    assert [x["index"] for x in body["results"]] == [best]
    assert body["results"][0]["document"]["text"] in ("Cats sit on mats.", docs[1])
    assert body["usage"]["total_tokens"] > 0


def test_v1_rerank_refuses_max_chunks_per_doc(ml_api: str) -> None:
    # Cohere v1's chunk-and-take-the-best is not implemented (documents are truncated): asking
    # for it is a 422 naming the field, never a silently different ranking.
    r = httpx.post(
        f"{ml_api}/v1/rerank",
        json={"query": "q", "documents": ["a", "b"], "max_chunks_per_doc": 3},
        timeout=60,
    )
    assert r.status_code == 422, r.text
    assert "max_chunks_per_doc" in r.json()["message"]
    spec = httpx.get(f"{ml_api}/docs.json", timeout=10).json()
    props = spec["paths"]["/v1/rerank"]["post"]["requestBody"]["content"]["application/json"]
    assert "max_chunks_per_doc" not in str(props)


def test_cohere_max_tokens_per_doc_cuts_documents(ml_api: str) -> None:
    long_doc = "vector database " + "filler text " * 200
    r = httpx.post(
        f"{ml_api}/v2/rerank",
        json={"query": "vector", "documents": [long_doc], "max_tokens_per_doc": 4},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    from tokenizers import Tokenizer

    # The tiny reranker shares the MiniLM vocabulary served at /tokenizer.
    tok = Tokenizer.from_str(httpx.get(f"{ml_api}/tokenizer", timeout=10).text)
    first4 = long_doc[: tok.encode(long_doc, add_special_tokens=False).offsets[3][1]]
    assert len(first4) < 30
    cut = _tei_scores(ml_api, "vector", [first4])
    assert r.json()["results"][0]["relevance_score"] == pytest.approx(cut[0], abs=1e-5)


def test_integer_options_refuse_booleans(ml_api: str) -> None:
    # Found by schemathesis: pydantic's lax mode read `false` as 0 for an integer field, so a
    # wrong type was answered 200 instead of naming the field.
    for path, body in (
        ("/v2/embed", {"texts": ["a"], "model": "embedder", "priority": False}),
        ("/v2/embed", {"texts": ["a"], "model": "embedder", "output_dimension": True}),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": True}),
    ):
        r = httpx.post(f"{ml_api}{path}", json=body, timeout=60)
        assert r.status_code == 422, (path, r.text)
        assert next(k for k in body if isinstance(body[k], bool)) in r.text
