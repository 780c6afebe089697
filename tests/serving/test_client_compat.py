"""Issue 14 over HTTP: TEI clients at the bare URL, documents-style rerank bodies, strict fields,
token ids checked before they reach a batch, and non-JSON bodies refused (real `bentoml serve`)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import openai
import pytest
from huggingface_hub import InferenceClient

TEXT = "Vectors live in Qdrant."


def post(url: str, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=60)


def embed(url: str, texts: list[str]) -> np.ndarray:
    r = post(url, "/embed", {"inputs": texts})
    assert r.status_code == 200, r.text
    return np.array(r.json())


def vocab_size(url: str) -> int:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(httpx.get(f"{url}/tokenizer", timeout=10).text)
    return tok.get_vocab_size(with_added_tokens=True)


# -- isolation: one bad request never fails its batch-mates -----------------------------------


def test_out_of_vocabulary_ids_do_not_poison_concurrent_requests(ml_api: str) -> None:
    vocab = vocab_size(ml_api)
    good_texts = ["first good request", "second good request", "third good request"]
    expected = embed(ml_api, good_texts)

    async def one_round() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=ml_api, timeout=60) as client:
            good = [
                client.post("/v1/embeddings", json={"input": t, "encoding_format": "float"})
                for t in good_texts
            ]
            bad = client.post("/v1/embeddings", json={"input": [[101, vocab + 70_000, 102]]})
            return list(await asyncio.gather(*good, bad))

    for _ in range(3):  # what the issue reproduced: 3 rounds of 3 good + 1 bad
        *good, bad = asyncio.run(one_round())
        for i, r in enumerate(good):
            assert r.status_code == 200, r.text
            got = np.array(r.json()["data"][0]["embedding"])
            assert np.abs(got - expected[i]).max() < 1e-5
        assert bad.status_code == 422, bad.text
        message = bad.json()["error"]["message"]
        assert f"vocabulary of {vocab}" in message
        assert "check_embedding_ctx_length=False" in message
        assert bad.json()["error"]["param"] == "input"


def test_token_ids_are_the_models_own_used_as_given(ml_api: str) -> None:
    ids = post(ml_api, "/tokenize", {"inputs": TEXT}).json()[0]
    with_specials = [t["id"] for t in ids]
    assert ids[0]["special"] and ids[-1]["special"]  # [CLS] ... [SEP]
    text_vec = embed(ml_api, [TEXT])[0]

    def by_ids(row: list[int]) -> np.ndarray:
        r = post(ml_api, "/v1/embeddings", {"input": [row], "encoding_format": "float"})
        assert r.status_code == 200, r.text
        return np.array(r.json()["data"][0]["embedding"])

    # The ids of /tokenize (special tokens included) give exactly the text's vector ...
    assert np.abs(by_ids(with_specials) - text_vec).max() < 1e-5
    # ... and ids are not edited: without the special tokens the model sees something else.
    assert np.abs(by_ids(with_specials[1:-1]) - text_vec).max() > 1e-3


def test_negative_token_id_is_refused(ml_api: str) -> None:
    r = post(ml_api, "/v1/embeddings", {"input": [[101, -1, 102]]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "input"


# -- TEI at the root URL ----------------------------------------------------------------------


def test_huggingface_inference_client_at_the_bare_url(ml_api: str) -> None:
    client = InferenceClient(model=ml_api)
    got = client.feature_extraction(TEXT)
    assert got.shape == (1, embed(ml_api, [TEXT]).shape[1])
    assert np.abs(got - embed(ml_api, [TEXT])).max() < 1e-5
    raw = client.feature_extraction(TEXT, normalize=False, truncate=True)
    assert np.linalg.norm(raw[0]) != pytest.approx(1.0, abs=1e-3)


def test_invocations_is_embed(ml_api: str) -> None:
    r = post(ml_api, "/invocations", {"inputs": [TEXT, "another"]})
    assert r.status_code == 200, r.text
    assert np.abs(np.array(r.json()) - embed(ml_api, [TEXT, "another"])).max() < 1e-6


def test_get_root_still_serves_the_docs_ui(ml_api: str) -> None:
    r = httpx.get(f"{ml_api}/", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]


def test_tokenize_and_decode_in_tei_shapes(ml_api: str) -> None:
    r = post(ml_api, "/tokenize", {"inputs": ["Hello world"], "add_special_tokens": False})
    assert r.status_code == 200, r.text
    tokens = r.json()[0]
    assert [(t["text"], t["start"], t["stop"], t["special"]) for t in tokens] == [
        ("Hello", 0, 5, False),
        ("world", 6, 11, False),
    ]
    ids = [t["id"] for t in tokens]
    assert post(ml_api, "/decode", {"ids": ids}).json() == ["hello world"]
    assert post(ml_api, "/decode", {"ids": [ids, ids[:1]]}).json() == ["hello world", "hello"]
    bad = post(ml_api, "/decode", {"ids": [10**9]})
    assert bad.status_code == 422 and "vocabulary" in bad.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": "x", "truncation_direction": "Left"}, "truncation_direction"),
        ({"inputs": "x", "prompt_name": "query"}, "prompt_name"),
    ],
)
def test_tei_options_we_cannot_honour_are_refused(ml_api: str, body: dict, field: str) -> None:
    for path in ("/", "/embed"):
        r = post(ml_api, path, body)
        assert r.status_code == 422 and field in r.json()["error"], r.text


# -- rerank: the documents-style body -----------------------------------------------------------


def test_documents_style_rerank_answers_in_infinity_shape(ml_api: str) -> None:
    docs = ["Cats sit on mats.", "Qdrant is a vector database.", "Bread recipes."]
    tei = post(ml_api, "/rerank", {"query": "vector database", "texts": docs}).json()
    expected = {h["index"]: h["score"] for h in tei}
    r = post(
        ml_api,
        "/rerank",
        {
            "model": "tiny-reranker",
            "query": "vector database",
            "documents": docs,
            "top_n": 2,
            "return_documents": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "rerank" and body["model"] == "tiny-reranker"
    assert [x["index"] for x in body["results"]] == [h["index"] for h in tei[:2]]
    for x in body["results"]:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-6)
        assert x["document"] == docs[x["index"]]
    assert body["usage"]["total_tokens"] > 0
    plain = post(ml_api, "/rerank", {"query": "q", "documents": docs}).json()
    assert len(plain["results"]) == 3 and plain["results"][0]["document"] is None


def test_each_rerank_body_honours_the_others_options(ml_api: str) -> None:
    docs = ["Cats sit on mats.", "Qdrant is a vector database.", "Bread recipes."]
    full = post(ml_api, "/rerank", {"query": "vector", "texts": docs, "raw_scores": True}).json()
    r = post(ml_api, "/rerank", {"query": "vector", "texts": docs, "top_n": 1, "raw_scores": True})
    assert r.json() == full[:1]
    r = post(ml_api, "/rerank", {"query": "vector", "documents": docs, "raw_scores": True})
    logits = {h["index"]: h["score"] for h in full}
    for x in r.json()["results"]:
        assert x["relevance_score"] == pytest.approx(logits[x["index"]], abs=1e-6)


@pytest.mark.parametrize(
    "body",
    [
        {"query": "q"},
        {"query": "q", "texts": ["a"], "documents": ["a"]},
        {"query": "q", "documents": ["a"], "model": "rerank-english-v3.0"},
    ],
)
def test_rerank_body_mixups_are_refused(ml_api: str, body: dict) -> None:
    r = post(ml_api, "/rerank", body)
    assert r.status_code in (404, 422), r.text
    assert isinstance(r.json()["error"], str)


# -- strictness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/embed", {"inputs": "x", "output_dimension": 8}, "output_dimension"),
        ("/", {"inputs": "x", "dimensions": 8}, "dimensions"),
        ("/rerank", {"query": "q", "texts": ["a"], "rank_fields": ["x"]}, "rank_fields"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "input_type": "x"}, "input_type"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "extra": 1}, "extra"),
        ("/tokenize", {"inputs": "x", "truncate": True}, "truncate"),
    ],
)
def test_unknown_fields_are_refused_naming_them(
    ml_api: str, path: str, body: dict, field: str
) -> None:
    r = post(ml_api, path, body)
    assert r.status_code == 422, r.text
    err = r.json()
    message = err.get("error") or err.get("message")
    assert f"`{field}`" in message and "accepts" in message, err


def test_openai_client_unknown_field_and_dimensions(ml_api: str) -> None:
    oai = openai.OpenAI(base_url=f"{ml_api}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        oai.embeddings.create(model="tiny-embedder", input="x", extra_body={"output_dimension": 8})
    body = exc.value.body  # type: ignore[attr-defined]
    assert "`output_dimension` (did you mean `dimensions`?)" in body["message"]
    assert body["param"] == "output_dimension"
    dim = embed(ml_api, ["x"]).shape[1]
    res = oai.embeddings.create(model="tiny-embedder", input="x", dimensions=dim)
    assert len(res.data[0].embedding) == dim
    with pytest.raises(openai.UnprocessableEntityError) as exc2:
        oai.embeddings.create(model="tiny-embedder", input="x", dimensions=dim // 2)
    assert "Matryoshka" in exc2.value.body["message"]  # type: ignore[attr-defined]


# -- bodies that are not JSON -----------------------------------------------------------------


def test_multipart_without_boundary_is_415_on_every_post_route(ml_api: str) -> None:
    paths = httpx.get(f"{ml_api}/docs.json", timeout=10).json()["paths"]
    posts = [p for p, item in paths.items() if "post" in item]
    assert {"/", "/embed", "/v1/embeddings", "/rerank", "/tokenize"} <= set(posts)
    for path in posts:
        r = httpx.post(
            f"{ml_api}{path}",
            content=b"--x\r\n\r\n",
            headers={"content-type": "multipart/form-data"},
            timeout=30,
        )
        assert r.status_code == 415, (path, r.text)
        assert "application/json" in r.text


def test_json_sent_as_form_data_is_read_as_json(ml_api: str) -> None:
    # What `curl -d '{...}'` sends without -H.
    r = httpx.post(
        f"{ml_api}/embed",
        content=b'{"inputs": "x"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert np.abs(np.array(r.json()) - embed(ml_api, ["x"])).max() < 1e-6


# -- Cohere /v2/embed -------------------------------------------------------------------------


def test_cohere_v2_embed_all_types_with_the_official_client(ml_api: str) -> None:
    import base64

    import cohere

    co = cohere.ClientV2(api_key="unused", base_url=ml_api)
    texts = ["Qdrant is a vector database.", "Bread recipes."]
    types = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
    res = co.embed(
        model="tiny-embedder", texts=texts, input_type="search_document", embedding_types=types
    )
    expected = embed(ml_api, texts)
    e = res.embeddings
    f = np.array(e.float_)
    assert np.abs(f - expected).max() < 1e-6
    assert np.array_equal(np.array(e.int8), np.clip(np.rint(f * 127), -128, 127))
    assert np.array_equal(np.array(e.uint8), np.clip(np.rint((f + 1) * 127.5), 0, 255))
    bits = np.packbits(f > 0, axis=1).astype(int)
    assert np.array_equal(np.array(e.ubinary), bits)
    assert np.array_equal(np.array(e.binary), bits - 128)
    assert np.array(e.ubinary).shape == (2, (f.shape[1] + 7) // 8)
    decoded = np.stack([np.frombuffer(base64.b64decode(b), dtype="<f4") for b in e.base64])
    assert np.abs(decoded - expected).max() < 1e-6
    assert res.texts == texts
    # Symmetric model: a query gets the same vector as a document.
    q = co.embed(model="tiny-embedder", texts=texts[:1], input_type="search_query")
    assert np.abs(np.array(q.embeddings.float_) - expected[:1]).max() < 1e-6


def test_cohere_v2_embed_refuses_what_it_cannot_honour(ml_api: str) -> None:
    import cohere

    co = cohere.ClientV2(api_key="unused", base_url=ml_api)
    for kwargs, field in (
        ({"output_dimension": 256}, "output_dimension"),
        ({"truncate": "START"}, "truncate"),
        ({"max_tokens": 4}, "max_tokens"),
    ):
        with pytest.raises(cohere.errors.UnprocessableEntityError) as exc:
            co.embed(model="tiny-embedder", texts=["x"], input_type="search_query", **kwargs)
        assert field in str(exc.value.body), exc.value.body
    with pytest.raises(cohere.errors.NotFoundError):
        co.embed(model="embed-v4.0", texts=["x"], input_type="search_query")
