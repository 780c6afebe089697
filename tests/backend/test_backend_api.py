"""The backend API in-process (FastAPI TestClient, real lifespan, embedded Qdrant in tmp_path),
with the ml-api replaced by the contract-speaking stub from backend_support. These cover the
API rules quickly; test_backend_integration.py runs the same flows against the real ml-api."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from backend_support import StubMLApi, make_docx, make_html, make_pdf
from fastapi.testclient import TestClient
from pydantic import SecretStr

from backend.app import create_app
from backend.ingest.chunk import Chunk
from backend.registry import Registry, Status
from backend.settings import Settings
from backend.store import VectorStore


@pytest.fixture
def stub(minilm_tokenizer_json: dict[str, Any]) -> StubMLApi:
    return StubMLApi(minilm_tokenizer_json)


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"ml_api_retries": 1, "ml_api_backoff_s": 0.01, "chunk_size": 64}
    )


def open_client(settings: Settings, stub: StubMLApi | None) -> TestClient:
    transport = httpx.ASGITransport(app=stub.app()) if stub else None
    return TestClient(create_app(settings, ml_transport=transport))


@pytest.fixture
def api(api_settings: Settings, stub: StubMLApi) -> Iterator[TestClient]:
    with open_client(api_settings, stub) as client:
        yield client


def wait(client: TestClient, doc_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/documents/{doc_id}").json()
        if body["status"] in ("indexed", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def upload(client: TestClient, *files: tuple[str, bytes], **form: str) -> httpx.Response:
    return client.post("/documents", files=[("files", f) for f in files], data=form or None)


def ingest(client: TestClient, name: str, data: bytes, **form: str) -> dict[str, Any]:
    resp = upload(client, (name, data), **form)
    assert resp.status_code == 202, resp.text
    return wait(client, resp.json()["documents"][0]["id"])


def points(client: TestClient, doc_id: str | None = None) -> int:
    store: VectorStore = client.app.state.store  # type: ignore[attr-defined]
    return client.portal.call(store.count, doc_id)  # type: ignore[union-attr]


LONG = " ".join(f"Paragraph sentence {i} about the lighthouse keeper." for i in range(60))


# -- happy paths -----------------------------------------------------------------------------------


def test_json_text_is_indexed_and_found(api: TestClient) -> None:
    resp = api.post(
        "/documents",
        json={"text": LONG, "title": "keeper.txt", "metadata": {"topic": "sea"}},
    )
    assert resp.status_code == 202
    accepted = resp.json()["documents"][0]
    assert accepted["status"] == "queued" and accepted["duplicate"] is False
    assert resp.headers["Location"] == accepted["status_url"] == f"/documents/{accepted['id']}"

    doc = wait(api, accepted["id"])
    assert doc["status"] == "indexed", doc
    assert doc["chunk_count"] > 1
    assert doc["chunks_stored"] == doc["chunk_count"]
    n = doc["chunk_count"]
    assert doc["progress"] == {"chunks_done": n, "chunks_total": n}
    assert doc["filename"] == "keeper.txt" and doc["metadata"] == {"topic": "sea"}
    assert doc["kind"] == "txt" and doc["size_bytes"] == len(LONG.encode())
    assert doc["indexed_at"] and doc["created_at"] and len(doc["content_hash"]) == 64

    body = api.post("/query", json={"query": "lighthouse keeper", "top_k": 3}).json()
    assert body["reranked"] is True
    assert set(body["timings_ms"]) == {"embed", "search", "rerank", "total"}
    assert len(body["results"]) == 3
    hit = body["results"][0]
    assert hit["document_id"] == accepted["id"] and hit["filename"] == "keeper.txt"
    assert hit["metadata"] == {"topic": "sea"} and hit["page"] is None
    assert LONG[hit["start"] : hit["end"]] == hit["text"]
    assert hit["score"] == hit["rerank_score"]
    assert isinstance(hit["vector_score"], float) and isinstance(hit["chunk_index"], int)


def test_every_file_type_in_one_upload(api: TestClient) -> None:
    files = [
        ("a.txt", b"Plain text about volcanoes and lava."),
        ("b.md", b"# Glaciers\n\nGlaciers carve valleys slowly."),
        ("c.pdf", make_pdf(["Deserts are dry.", "Oases have water in deserts."])),
        ("d.html", make_html("Rainforest", "Rainforests are humid and dense.")),
        ("e.docx", make_docx(["Tundra", "The tundra is cold."], [["Season", "Temp"]])),
    ]
    resp = upload(api, *files)
    assert resp.status_code == 202, resp.text
    assert "Location" not in resp.headers
    docs = {d["filename"]: wait(api, d["id"]) for d in resp.json()["documents"]}
    assert {name: d["status"] for name, d in docs.items()} == dict.fromkeys(
        ["a.txt", "b.md", "c.pdf", "d.html", "e.docx"], "indexed"
    )
    assert docs["c.pdf"]["pages"] == 2 and docs["a.txt"]["pages"] is None
    assert [docs[n]["kind"] for n in sorted(docs)] == ["txt", "md", "pdf", "html", "docx"]

    pdf_hits = api.post(
        "/query",
        json={"query": "oases water", "filters": {"document_ids": [docs["c.pdf"]["id"]]}},
    ).json()["results"]
    assert {h["page"] for h in pdf_hits} == {1, 2}
    assert pdf_hits[0]["page"] == 2
    everything = api.post("/query", json={"query": "junk menu secret", "top_k": 100}).json()
    texts = " ".join(h["text"] for h in everything["results"])
    assert "Rainforests are humid" in texts
    assert "navjunk" not in texts and "scriptjunk" not in texts


def test_identical_content_is_deduplicated(api: TestClient) -> None:
    first = upload(api, ("one.txt", b"same content")).json()["documents"][0]
    again = upload(api, ("two.txt", b"same content")).json()["documents"][0]
    assert again["id"] == first["id"] and again["duplicate"] is True
    assert again["filename"] == "one.txt"
    assert wait(api, first["id"])["status"] == "indexed"
    assert api.get("/documents").json()["total"] == 1


def test_new_version_replaces_the_old_once_indexed(api: TestClient, stub: StubMLApi) -> None:
    old = ingest(api, "policy.txt", b"Version one: remote work is forbidden.")
    stub.embed_delay_s, stub.slow_marker = 0.5, "Version two"
    new_id = upload(api, ("policy.txt", b"Version two: remote work is allowed."))
    new_id = new_id.json()["documents"][0]["id"]
    # While the new version is ingesting, the old one is still served.
    time.sleep(0.2)
    hits = api.post("/query", json={"query": "remote work"}).json()["results"]
    assert [h["document_id"] for h in hits] == [old["id"]]
    assert wait(api, new_id)["status"] == "indexed"
    assert api.get(f"/documents/{old['id']}").status_code == 404
    assert points(api, old["id"]) == 0
    hits = api.post("/query", json={"query": "remote work"}).json()["results"]
    assert [h["document_id"] for h in hits] == [new_id]


def test_a_failed_new_version_keeps_the_old(api: TestClient, stub: StubMLApi) -> None:
    old = ingest(api, "faq.txt", b"FAQ v1: the office opens at nine.")
    stub.embed_status = 503
    new = ingest(api, "faq.txt", b"FAQ v2: the office opens at ten.")
    assert new["status"] == "failed"
    assert api.get(f"/documents/{old['id']}").json()["status"] == "indexed"
    stub.embed_status = 200
    hits = api.post("/query", json={"query": "office opens"}).json()["results"]
    assert [h["document_id"] for h in hits] == [old["id"]]


def test_delete_removes_document_and_chunks(api: TestClient) -> None:
    doc = ingest(api, "gone.txt", LONG.encode())
    assert points(api, doc["id"]) == doc["chunk_count"] > 0
    assert api.delete(f"/documents/{doc['id']}").status_code == 204
    assert api.get(f"/documents/{doc['id']}").status_code == 404
    assert points(api, doc["id"]) == 0
    assert api.post("/query", json={"query": "lighthouse"}).json()["results"] == []
    assert api.delete(f"/documents/{doc['id']}").status_code == 404


def test_delete_while_ingesting(api: TestClient, stub: StubMLApi) -> None:
    stub.embed_delay_s = 0.3
    doc_id = upload(api, ("slow.txt", LONG.encode())).json()["documents"][0]["id"]
    time.sleep(0.15)
    assert api.delete(f"/documents/{doc_id}").status_code == 204
    time.sleep(0.5)
    assert points(api, doc_id) == 0
    assert api.get("/documents").json()["total"] == 0


def test_ml_api_down_fails_the_document_without_chunks(api: TestClient, stub: StubMLApi) -> None:
    stub.embed_status = 503
    doc = ingest(api, "doomed.txt", LONG.encode())
    assert doc["status"] == "failed"
    assert "ml-api unavailable" in doc["error"]
    assert doc["chunks_stored"] == 0 and doc["chunk_count"] == 0
    # The same content again is a retry, under the same id.
    stub.embed_status = 200
    resp = upload(api, ("doomed.txt", LONG.encode())).json()["documents"][0]
    assert resp["id"] == doc["id"] and resp["duplicate"] is False
    assert wait(api, doc["id"])["status"] == "indexed"


def test_parse_errors_found_later_mark_the_document_failed(api: TestClient) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 20, 20)  # valid PDF, no text layer: passes the upload checks
    doc = ingest(api, "scan.pdf", bytes(pdf.output()))
    assert doc["status"] == "failed"
    assert "no extractable text" in doc["error"]


def test_filters_on_ids_and_metadata(api: TestClient) -> None:
    a = ingest(api, "a.txt", b"Cats purr softly.", metadata='{"team": "pets", "year": 2024}')
    b = api.post(
        "/documents",
        json={"text": "Cats hunt mice.", "title": "b", "metadata": {"team": "farm", "year": 2023}},
    ).json()["documents"][0]
    wait(api, b["id"])

    def ids(filters: dict[str, Any]) -> list[str]:
        body = api.post("/query", json={"query": "cats", "filters": filters})
        assert body.status_code == 200, body.text
        return sorted(h["document_id"] for h in body.json()["results"])

    assert ids({}) == sorted([a["id"], b["id"]])
    assert ids({"document_ids": [a["id"]]}) == [a["id"]]
    assert ids({"document_ids": []}) == []
    assert ids({"metadata": {"team": "farm"}}) == [b["id"]]
    assert ids({"metadata": {"year": [2024, 2025]}}) == [a["id"]]
    assert ids({"metadata": {"team": "pets", "year": 2023}}) == []


def test_rerank_off_and_no_reranker(api: TestClient, stub: StubMLApi) -> None:
    ingest(api, "x.txt", LONG.encode())
    body = api.post("/query", json={"query": "lighthouse", "rerank": False}).json()
    assert body["reranked"] is False
    assert all(r["rerank_score"] is None for r in body["results"])
    assert all(r["score"] == r["vector_score"] for r in body["results"])
    scores = [r["vector_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)

    stub.reranker = False
    body = api.post("/query", json={"query": "lighthouse"}).json()
    assert body["reranked"] is False and body["results"]


# -- rejections ------------------------------------------------------------------------------------


@pytest.fixture
def small_api(api_settings: Settings, stub: StubMLApi) -> Iterator[TestClient]:
    with open_client(api_settings.model_copy(update={"max_upload_bytes": 2000}), stub) as c:
        yield c


@pytest.mark.parametrize(
    ("files", "status", "detail"),
    [
        ([("photo.png", b"\x89PNG...")], 415, "photo.png: unsupported file type '.png'"),
        ([("big.txt", b"x" * 2001)], 413, "big.txt: file is 2001 bytes; the limit is 2000"),
        ([("empty.txt", b"")], 422, "empty.txt: the file is empty"),
        ([("blank.md", b"  \n ")], 422, "blank.md: the file has no text"),
        ([("bad.pdf", b"%PDF-1.4 nonsense")], 422, "bad.pdf: cannot open the PDF"),
        ([("fake.pdf", b"hello")], 422, "fake.pdf: not a PDF"),
        ([("fake.docx", b"hello")], 422, "fake.docx: not a DOCX"),
        ([("bin.txt", b"\x00\x01\x02" * 100)], 422, "bin.txt: binary content"),
        ([("ok.txt", b"fine"), ("bad.pdf", b"nope")], 422, "bad.pdf: not a PDF"),
    ],
)
def test_upload_rejections(
    small_api: TestClient, files: list[tuple[str, bytes]], status: int, detail: str
) -> None:
    resp = upload(small_api, *files)
    assert resp.status_code == status, resp.text
    assert resp.json()["detail"].startswith(detail), resp.json()
    # Nothing of a rejected request is registered, not even its good files.
    assert small_api.get("/documents").json()["total"] == 0


@pytest.mark.parametrize(
    ("kwargs", "status", "detail"),
    [
        ({"content": b"raw", "headers": {"content-type": "text/plain"}}, 415, "send multipart"),
        ({"json": {"text": "   "}}, 422, "text: must contain non-whitespace text"),
        ({"json": {"text": "x", "metadata": {"bad key": 1}}}, 422, "metadata.bad key"),
        ({"json": {"text": "x", "extra": 1}}, 422, "extra: Extra inputs are not permitted"),
        ({"json": {"text": "x" * 2001}}, 413, "text: 2001 bytes; the limit is 2000"),
        ({"data": {"metadata": "{}"}}, 422, "files: at least one file is required"),
        ({"files": [("files", ("a.txt", b"a"))], "data": {"metadata": "{"}}, 422, "metadata: "),
        (
            {"files": [("files", ("a.txt", b"a"))], "data": {"metadata": '{"k": [1]}'}},
            422,
            "metadata.k",
        ),
    ],
)
def test_upload_body_errors(
    small_api: TestClient, kwargs: dict[str, Any], status: int, detail: str
) -> None:
    if "data" in kwargs and "files" not in kwargs:
        # A multipart body without files.
        kwargs = {"files": [("other", ("x.txt", b"x"))], **kwargs}
    resp = small_api.post("/documents", **kwargs)
    assert resp.status_code == status, resp.text
    assert resp.json()["detail"].startswith(detail), resp.json()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"query": "q", "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
        ({"query": "q", "top_k": 101}, "top_k: Input should be less than or equal to 100"),
        ({"query": ""}, "query: String should have at least 1 character"),
        ({"query": "  "}, "query: must contain non-whitespace text"),
        ({"query": "q" * 2001}, "query: String should have at most 2000 characters"),
        ({}, "query: Field required"),
        ({"query": "q", "topk": 3}, "topk: Extra inputs are not permitted"),
        ({"query": "q", "filters": {"metadata": {"a b": 1}}}, "filters.metadata.a b"),
        ({"query": "q", "filters": {"ids": []}}, "filters.ids: Extra inputs"),
    ],
)
def test_query_validation(api: TestClient, body: dict[str, Any], detail: str) -> None:
    resp = api.post("/query", json=body)
    assert resp.status_code == 422
    assert resp.json()["detail"].startswith(detail), resp.json()
    assert resp.json()["errors"][0]["field"] == detail.split(":")[0]


def test_query_length_limit_from_settings(api_settings: Settings, stub: StubMLApi) -> None:
    with open_client(api_settings.model_copy(update={"max_query_chars": 10}), stub) as c:
        resp = c.post("/query", json={"query": "x" * 11})
    assert resp.status_code == 422
    assert resp.json()["detail"] == "query: at most 10 characters (got 11)"


def test_not_found_and_listing(api: TestClient) -> None:
    assert api.get("/documents/nope").json() == {"detail": "document nope not found"}
    ids = [
        api.post("/documents", json={"text": f"doc {i}"}).json()["documents"][0]["id"]
        for i in range(3)
    ]
    page = api.get("/documents", params={"limit": 2}).json()
    assert page["total"] == 3 and page["next_offset"] == 2
    assert [d["id"] for d in page["documents"]] == ids[::-1][:2]
    last = api.get("/documents", params={"limit": 2, "offset": 2}).json()
    assert last["next_offset"] is None and [d["id"] for d in last["documents"]] == [ids[0]]
    resp = api.get("/documents", params={"limit": 0})
    assert resp.status_code == 422 and resp.json()["detail"].startswith("limit: ")


# -- service behaviour -----------------------------------------------------------------------------


def test_api_key(api_settings: Settings, stub: StubMLApi) -> None:
    secured = api_settings.model_copy(update={"api_key": SecretStr("k3y")})
    with open_client(secured, stub) as c:
        assert c.get("/health").status_code == 200
        resp = c.get("/documents")
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        assert "API key" in resp.json()["detail"]
        bad = {"Authorization": "Bearer nope"}
        assert c.post("/query", json={"query": "q"}, headers=bad).status_code == 401
        good = {"Authorization": "Bearer k3y"}
        assert c.get("/documents", headers=good).status_code == 200


def test_health_ok_and_degraded(api_settings: Settings, stub: StubMLApi) -> None:
    with open_client(api_settings, stub) as c:
        body = c.get("/health").json()
    assert body["status"] == "ok"
    assert body["ml_api"]["embedder"]["dimension"] == 64
    assert body["qdrant"]["status"] == "ok" and body["qdrant"]["mode"] == "embedded"
    down = api_settings.model_copy(update={"ml_api_url": "http://127.0.0.1:9"})
    with open_client(down, None) as c:
        resp = c.get("/health")
        assert resp.status_code == 200
        body = resp.json()
        assert body["status"] == "degraded" and body["ml_api"]["status"] == "down"
        assert body["backend"]["status"] == "ok" and body["qdrant"]["status"] == "ok"
        # A query needs the ml-api: a clean 503, no traceback.
        resp = c.post("/query", json={"query": "q"})
        assert resp.status_code == 503 and "ml-api unavailable" in resp.json()["detail"]


def test_cors_is_off_by_default_and_configurable(api_settings: Settings, stub: StubMLApi) -> None:
    preflight = {"Origin": "http://ui.test", "Access-Control-Request-Method": "POST"}
    with open_client(api_settings, stub) as c:
        resp = c.options("/query", headers=preflight)
        assert "access-control-allow-origin" not in resp.headers
    allowed = api_settings.model_copy(update={"cors_origins": ["http://ui.test"]})
    with open_client(allowed, stub) as c:
        resp = c.options("/query", headers=preflight)
        assert resp.headers["access-control-allow-origin"] == "http://ui.test"


def test_startup_recovery(api_settings: Settings, stub: StubMLApi) -> None:
    """A previous process died mid-ingest and mid-delete: the next start cleans up."""
    s = api_settings
    s.data_dir.mkdir(parents=True)
    reg = Registry(s.registry_path)
    half, _ = reg.add(content_hash="h1", filename="half.txt", kind="txt", size_bytes=1)
    reg.update(half.id, status=Status.EMBEDDING, chunks_total=4, chunks_done=2)
    dying, _ = reg.add(content_hash="h2", filename="dying.txt", kind="txt", size_bytes=1)
    reg.update(dying.id, status=Status.DELETING)
    reg.close()

    async def seed() -> None:
        store = VectorStore(s)
        await store.ensure_collection(64)
        for doc in (half, dying):
            await store.upsert(
                document_id=doc.id,
                content_hash=doc.content_hash,
                chunks=[Chunk(i, None, 0, 1, "x") for i in range(2)],
                vectors=[[1.0] + [0.0] * 63] * 2,
                filename=doc.filename,
                metadata={},
            )
        await store.close()

    asyncio.run(seed())
    s.spool_dir.mkdir(parents=True)
    (s.spool_dir / half.id).write_bytes(b"x")

    with open_client(s, stub) as c:
        doc = c.get(f"/documents/{half.id}").json()
        assert doc["status"] == "failed" and doc["error"].startswith("interrupted")
        assert doc["chunks_stored"] == 0
        assert c.get(f"/documents/{dying.id}").status_code == 404
        assert points(c) == 0
        assert list(s.spool_dir.iterdir()) == []
