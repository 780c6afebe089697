"""The backend API in-process (FastAPI TestClient, real lifespan, embedded Qdrant in tmp_path)
against the real ml-api (`ml_api`: tiny random embedder and reranker, so tests assert behaviour,
not ranking quality). Failure scenarios use an address where nothing listens; an ml-api process
stopped mid-ingest and a backend killed mid-ingest are in test_backend_integration.py."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_support import make_docx, make_html, make_pdf
from fastapi.testclient import TestClient
from pydantic import SecretStr

from backend.app import create_app
from backend.ingest.chunk import Chunk
from backend.registry import Registry, Status
from backend.settings import Settings
from backend.store import VectorStore
from backend.store.select import open_store

NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port
# Ingestion slow enough to be caught in the act: one tiny chunk per /embed request.
SLOW = {"chunk_size": 16, "chunk_overlap": 0, "embed_batch_size": 1, "embed_concurrency": 1}


@pytest.fixture
def api_settings(settings: Settings, ml_api: str) -> Settings:
    return settings.model_copy(
        update={
            "ml_api_url": ml_api,
            "ml_api_retries": 1,
            "ml_api_backoff_s": 0.01,
            "chunk_size": 64,
        }
    )


def open_client(settings: Settings, **overrides: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides)))


@pytest.fixture
def api(api_settings: Settings) -> Iterator[TestClient]:
    with open_client(api_settings) as client:
        yield client


def wait(client: TestClient, doc_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/documents/{doc_id}").json()
        if body["status"] in ("indexed", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def wait_embedding(client: TestClient, doc_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = client.get(f"/documents/{doc_id}").json()
        if doc["status"] == "embedding" and doc["progress"]["chunks_done"] > 0:
            return doc
        assert doc["status"] in ("queued", "parsing", "embedding"), doc
        time.sleep(0.02)
    raise TimeoutError(f"{doc_id} never started embedding")


def upload(client: TestClient, *files: tuple[str, bytes], **form: str) -> httpx.Response:
    return client.post("/documents", files=[("files", f) for f in files], data=form or None)


def ingest(client: TestClient, name: str, data: bytes, **form: str) -> dict[str, Any]:
    resp = upload(client, (name, data), **form)
    assert resp.status_code == 202, resp.text
    return wait(client, resp.json()["documents"][0]["id"])


def points(client: TestClient, doc_id: str | None = None) -> int:
    store: VectorStore = client.app.state.store  # type: ignore[attr-defined]
    return client.portal.call(store.count, doc_id)  # type: ignore[union-attr]


def filler(sentences: int) -> str:
    return " ".join(f"Filler sentence {i} about harbour logistics." for i in range(sentences))


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
    assert {h["text"] for h in pdf_hits} == {"Deserts are dry.", "Oases have water in deserts."}
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


def test_new_version_replaces_the_old_once_indexed(api_settings: Settings) -> None:
    with open_client(api_settings, **SLOW) as api:
        old = ingest(api, "policy.txt", b"Version one: remote work is forbidden.")
        text = "Version two: remote work is allowed. " + filler(300)
        accepted = upload(api, ("policy.txt", text.encode()), replace=old["id"]).json()
        new_id = accepted["documents"][0]["id"]
        assert accepted["documents"][0]["replaces"] == old["id"]
        # While the new version is ingesting, only the old one is served.
        wait_embedding(api, new_id)
        hits = api.post("/query", json={"query": "remote work", "top_k": 100}).json()["results"]
        assert {h["document_id"] for h in hits} == {old["id"]}
        assert wait(api, new_id)["status"] == "indexed"
        assert api.get(f"/documents/{old['id']}").status_code == 404
        assert points(api, old["id"]) == 0
        hits = api.post("/query", json={"query": "remote work", "top_k": 100}).json()["results"]
        assert {h["document_id"] for h in hits} == {new_id}


def test_a_failed_new_version_keeps_the_old(api: TestClient) -> None:
    old = ingest(api, "faq.pdf", make_pdf(["FAQ v1: the office opens at nine."]))
    from fpdf import FPDF

    scan = FPDF()
    scan.add_page()
    scan.rect(10, 10, 20, 20)  # v2 has no text layer: it fails after upload
    new = ingest(api, "faq.pdf", bytes(scan.output()), replace=old["id"])
    assert new["status"] == "failed" and "no extractable text" in new["error"]
    assert api.get(f"/documents/{old['id']}").json()["status"] == "indexed"
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


def test_delete_while_ingesting(api_settings: Settings) -> None:
    with open_client(api_settings, **SLOW) as api:
        doc_id = upload(api, ("slow.txt", filler(300).encode())).json()["documents"][0]["id"]
        wait_embedding(api, doc_id)
        assert api.delete(f"/documents/{doc_id}").status_code == 204
        assert points(api, doc_id) == 0
        time.sleep(0.3)  # nothing of the cancelled ingestion lands afterwards
        assert points(api, doc_id) == 0
        assert api.get("/documents").json()["total"] == 0


def test_a_failed_document_is_retried_under_the_same_id(api_settings: Settings) -> None:
    with open_client(api_settings, max_extracted_chars=100) as api:
        doc = ingest(api, "long.txt", LONG.encode())
    assert doc["status"] == "failed"
    assert doc["error"] == (
        f"the extracted text has {len(LONG)} characters; the limit is 100 (MAX_EXTRACTED_CHARS)"
    )
    assert doc["chunks_stored"] == 0 and doc["chunk_count"] == 0
    # The same content again (limits raised) is a retry, under the same id.
    with open_client(api_settings) as api:
        again = upload(api, ("long.txt", LONG.encode())).json()["documents"][0]
        assert again["id"] == doc["id"] and again["duplicate"] is False
        assert wait(api, doc["id"])["status"] == "indexed"


def test_ml_api_down_is_503_with_retry_after(api_settings: Settings) -> None:
    with open_client(api_settings, ml_api_url=NOWHERE) as api:
        health = api.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded" and body["ml_api"]["status"] == "down"
        assert body["backend"]["status"] == "ok" and body["qdrant"]["status"] == "ok"
        for resp in (
            api.post("/query", json={"query": "q"}),
            upload(api, ("a.txt", b"some text")),
            api.post("/documents", json={"text": "some text"}),
        ):
            assert resp.status_code == 503, resp.text
            assert "ml-api" in resp.json()["detail"] and NOWHERE in resp.json()["detail"]
            assert int(resp.headers["Retry-After"]) >= 1
        # Nothing of a refused upload is registered or left in the spool.
        assert api.get("/documents").json()["total"] == 0
        assert list(api_settings.spool_dir.iterdir()) == []


def test_qdrant_unavailable_is_503_with_retry_after(api_settings: Settings) -> None:
    with open_client(api_settings) as api:
        store: VectorStore = api.app.state.store  # type: ignore[attr-defined]
        api.portal.call(store.close)  # the store is gone (as a Qdrant server that went away)  # type: ignore[union-attr]
        body = api.get("/health").json()
        assert body["status"] == "degraded" and body["qdrant"]["status"] == "down"
        for resp in (api.post("/query", json={"query": "q"}), upload(api, ("a.txt", b"text"))):
            assert resp.status_code == 503, resp.text
            assert resp.json()["detail"].startswith("Qdrant (")
            assert int(resp.headers["Retry-After"]) >= 1


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


def test_rerank_off(api: TestClient) -> None:
    ingest(api, "x.txt", LONG.encode())
    body = api.post("/query", json={"query": "lighthouse", "rerank": False}).json()
    assert body["reranked"] is False and body["results"]
    assert all(r["rerank_score"] is None for r in body["results"])
    assert all(r["score"] == r["vector_score"] for r in body["results"])
    scores = [r["vector_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


# -- rejections ------------------------------------------------------------------------------------


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inner.txt", "hello from inside the archive")
    return buf.getvalue()


def tar_bytes() -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("inner.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()[:1024]  # header and data; the padding tar adds is not needed


def gzip_bytes() -> bytes:
    import gzip

    return gzip.compress(b"hello " * 100)


@pytest.fixture
def small_api(api_settings: Settings) -> Iterator[TestClient]:
    with open_client(api_settings, max_upload_bytes=4000, max_pdf_pages=3) as c:
        yield c


ARCHIVE_REFUSED = "archives are not accepted (archives are never expanded)"


@pytest.mark.parametrize(
    ("files", "status", "detail"),
    [
        ([("photo.png", b"\x89PNG...")], 415, "photo.png: unsupported file type '.png'"),
        (
            [("big.txt", b"x" * 4001)],
            413,
            "big.txt: file is 4001 bytes; the limit is 4000 (MAX_UPLOAD_BYTES)",
        ),
        ([("empty.txt", b"")], 422, "empty.txt: the file is empty"),
        ([("blank.md", b"  \n ")], 422, "blank.md: the file has no text"),
        ([("bad.pdf", b"%PDF-1.4 nonsense")], 422, "bad.pdf: cannot open the PDF"),
        ([("fake.pdf", b"hello")], 422, "fake.pdf: not a PDF"),
        ([("fake.docx", b"hello")], 422, "fake.docx: not a DOCX"),
        ([("bin.txt", b"\x00\x01\x02" * 100)], 422, "bin.txt: binary content"),
        ([("ok.txt", b"fine"), ("bad.pdf", b"nope")], 422, "bad.pdf: not a PDF"),
        (
            [("long.pdf", make_pdf(["1", "2", "3", "4", "5"]))],
            422,
            "long.pdf: the PDF has 5 pages; the limit is 3 (MAX_PDF_PAGES)",
        ),
        # Archives: by extension, and by content whatever the extension says.
        ([("docs.zip", zip_bytes())], 415, f"docs.zip: zip {ARCHIVE_REFUSED}"),
        ([("docs.tar.gz", gzip_bytes())], 415, f"docs.tar.gz: gzip {ARCHIVE_REFUSED}"),
        ([("x.7z", b"7z\xbc\xaf\x27\x1c")], 415, f"x.7z: 7z {ARCHIVE_REFUSED}"),
        ([("x.rar", b"Rar!\x1a\x07\x00")], 415, f"x.rar: rar {ARCHIVE_REFUSED}"),
        ([("notes.txt", zip_bytes())], 415, f"notes.txt: zip {ARCHIVE_REFUSED}"),
        ([("notes.md", tar_bytes())], 415, f"notes.md: tar {ARCHIVE_REFUSED}"),
        ([("paper.pdf", gzip_bytes())], 415, f"paper.pdf: gzip {ARCHIVE_REFUSED}"),
        ([("report.docx", gzip_bytes())], 415, f"report.docx: gzip {ARCHIVE_REFUSED}"),
        # A ZIP named .docx is opened as one, and refused when it is not a Word document.
        ([("report.docx", zip_bytes())], 422, "report.docx: not a DOCX (no word/document.xml"),
        ([("a" * 252 + ".txt", b"text")], 422, "filename: at most 255 characters (got 256)"),
    ],
)
def test_upload_rejections(
    small_api: TestClient, files: list[tuple[str, bytes]], status: int, detail: str
) -> None:
    resp = upload(small_api, *files)
    assert resp.status_code == status, resp.text
    assert resp.json()["detail"].startswith(detail), resp.json()
    # Nothing of a rejected request is registered or left in the spool, not even its good files.
    assert small_api.get("/documents").json()["total"] == 0
    settings: Settings = small_api.app.state.settings  # type: ignore[attr-defined]
    assert list(settings.spool_dir.iterdir()) == []


def test_a_docx_is_a_zip_and_is_accepted(api: TestClient) -> None:
    doc = ingest(api, "tiny.docx", make_docx(["Title", "Body text."]))
    assert doc["status"] == "indexed", doc


def test_request_size_limits(api_settings: Settings) -> None:
    with open_client(api_settings, max_request_bytes=5000) as api:
        resp = upload(api, ("a.txt", b"x" * 3000), ("b.txt", b"y" * 3000))
        assert resp.status_code == 413
        assert resp.json()["detail"].endswith("the limit is 5000 (MAX_REQUEST_BYTES)")
        # A chunked body declares no length: it is counted as it arrives.
        chunks = iter([b'{"text": "', b"z" * 4000, b"z" * 4000, b'"}'])
        resp = api.post("/documents", content=chunks, headers={"content-type": "application/json"})
        assert resp.status_code == 413, resp.text
        assert resp.json()["detail"] == (
            "request body is more than 5000 bytes; the limit is 5000 (MAX_REQUEST_BYTES)"
        )
        # Other JSON routes take at most 1 MiB.
        huge = {"query": "q", "filters": {"document_ids": ["x" * 2_000_000]}}
        resp = api.post("/query", json=huge)
        assert resp.status_code == 413 and "the limit is 1048576" in resp.json()["detail"]
        assert api.get("/documents").json()["total"] == 0
        assert api.post("/query", json={"query": "still answering"}).status_code == 200


def test_filenames_are_labels_not_paths(api: TestClient, tmp_path: Path) -> None:
    doc = ingest(api, "../../escape.txt", b"A file whose name tries to leave the spool.")
    assert doc["status"] == "indexed" and doc["filename"] == "../../escape.txt"
    assert [p for p in tmp_path.parent.rglob("escape.txt")] == []
    resp = api.post("/documents", json={"text": "titled", "title": "a\x00b\x1b/../c.md"})
    accepted = resp.json()["documents"][0]
    assert accepted["filename"] == "ab/../c.md"
    assert wait(api, accepted["id"])["kind"] == "md"


def test_parse_limits_fail_the_document(api_settings: Settings, tmp_path: Path) -> None:
    slow_html = b"<html><body>" + b"<p>x</p>" * 500_000 + b"</body></html>"
    with open_client(api_settings, parse_timeout_s=0.5) as api:
        doc = ingest(api, "slow.html", slow_html)
        assert doc["status"] == "failed"
        assert doc["error"] == "parse timed out after 0.5 s (PARSE_TIMEOUT_S)"
    with open_client(api_settings, parse_memory_mb=16) as api:
        doc = ingest(api, "big.txt", b"word " * 4_000_000)
        assert doc["status"] == "failed"
        assert doc["error"] == "parser exceeded memory limit of 16 MiB (PARSE_MEMORY_MB)"
        assert api.post("/query", json={"query": "still answering"}).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "detail"),
    [
        ({"content": b"raw", "headers": {"content-type": "text/plain"}}, 415, "send multipart"),
        ({"json": {"text": "   "}}, 422, "text: must contain non-whitespace text"),
        ({"json": {"text": "x", "metadata": {"bad key": 1}}}, 422, "metadata.bad key"),
        ({"json": {"text": "x", "extra": 1}}, 422, "extra: Extra inputs are not permitted"),
        ({"json": {"text": "x" * 4001}}, 413, "text: 4001 bytes; the limit is 4000"),
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


def test_query_length_limit_from_settings(api_settings: Settings) -> None:
    with open_client(api_settings, max_query_chars=10) as c:
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


def test_api_key(api_settings: Settings) -> None:
    with open_client(api_settings, api_key=SecretStr("k3y")) as c:
        assert c.get("/health").status_code == 200
        resp = c.get("/documents")
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        assert "API key" in resp.json()["detail"]
        bad = {"Authorization": "Bearer nope"}
        assert c.post("/query", json={"query": "q"}, headers=bad).status_code == 401
        good = {"Authorization": "Bearer k3y"}
        assert c.get("/documents", headers=good).status_code == 200


def test_health_ok(api: TestClient) -> None:
    body = api.get("/health").json()
    assert body["status"] == "ok"
    assert body["ml_api"]["embedder"]["dimension"] == 32  # the tiny embedder
    assert body["ml_api"]["reranker"] is not None
    assert body["qdrant"]["status"] == "ok" and body["qdrant"]["mode"] == "embedded"
    backend = body["backend"]
    assert backend["ingest_pending"] == 0 and backend["queue_full"] is False
    assert backend["max_pending_documents"] == 1000 and backend["uploads_in_progress"] == 0


def test_cors_is_off_by_default_and_configurable(api_settings: Settings) -> None:
    preflight = {"Origin": "http://ui.test", "Access-Control-Request-Method": "POST"}
    with open_client(api_settings) as c:
        resp = c.options("/query", headers=preflight)
        assert "access-control-allow-origin" not in resp.headers
    with open_client(api_settings, cors_origins=["http://ui.test"]) as c:
        resp = c.options("/query", headers=preflight)
        assert resp.headers["access-control-allow-origin"] == "http://ui.test"


def test_startup_recovery(api_settings: Settings) -> None:
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
        store = open_store(s)
        await store.ensure_collection(32)
        for doc in (half, dying):
            await store.upsert(
                document_id=doc.id,
                content_hash=doc.content_hash,
                chunks=[Chunk(i, None, 0, 1, "x") for i in range(2)],
                vectors=[[1.0] + [0.0] * 31] * 2,
                filename=doc.filename,
                metadata={},
            )
        await store.close()

    asyncio.run(seed())
    s.spool_dir.mkdir(parents=True)
    (s.spool_dir / half.id).write_bytes(b"x")

    with open_client(s) as c:
        doc = c.get(f"/documents/{half.id}").json()
        assert doc["status"] == "failed" and doc["error"].startswith("interrupted")
        assert doc["chunks_stored"] == 0
        assert c.get(f"/documents/{dying.id}").status_code == 404
        assert points(c) == 0
        assert list(s.spool_dir.iterdir()) == []
