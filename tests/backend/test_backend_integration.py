"""The real thing over HTTP: a uvicorn backend process against a real `bentoml serve` ml-api
(tiny embedder + tiny reranker, or the real MiniLM without reranker), embedded Qdrant on disk."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_support import Backend, StartBackend, launch_backend, make_docx, make_html, make_pdf

from backend.settings import Settings
from backend.store.select import open_store

TEXT = (
    "The lighthouse keeper climbs the spiral stairs every evening to light the lamp. "
    "Ships rely on the beam to avoid the rocks near the harbour entrance."
)


def count_points(data_dir: Path, document_id: str | None = None) -> int:
    """Open the embedded Qdrant folder directly (its backend must be stopped) and count."""

    async def run() -> int:
        store = open_store(Settings(_env_file=None, data_dir=data_dir))  # type: ignore[call-arg]
        try:
            return await store.count(document_id)
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def backend(ml_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One backend on the tiny ml-api, shared by the tests of this module that can share it."""
    tmp = tmp_path_factory.mktemp("backend")
    b = launch_backend(tmp / "data", tmp / "backend.log", ml_api_url=ml_api, chunk_size="64")
    yield b
    b.stop()


def test_pipeline_for_every_file_type(backend: Backend) -> None:
    files = [
        ("keeper.txt", TEXT.encode()),
        ("notes.md", b"# Harbour\n\nThe harbour master keeps a log of every ship."),
        ("manual.pdf", make_pdf(["Page one: lamp maintenance.", "Page two: fog signals."])),
        ("page.html", make_html("Coastguard", "The coastguard patrols the bay at night.")),
        ("report.docx", make_docx(["Report", "Storm damage was light."], [["Ship", "Status"]])),
    ]
    resp = backend.upload(*files, metadata='{"source": "integration"}')
    assert resp.status_code == 202, resp.text
    accepted = resp.json()["documents"]
    docs = {a["filename"]: backend.wait(a["id"]) for a in accepted}
    for name, doc in docs.items():
        assert doc["status"] == "indexed", (name, doc, backend.log()[-3000:])
        assert doc["chunks_stored"] == doc["chunk_count"] > 0
        assert doc["metadata"] == {"source": "integration"}
    assert docs["manual.pdf"]["pages"] == 2

    body = backend.query("lighthouse lamp", top_k=5).json()
    assert body["reranked"] is True
    assert 0 < len(body["results"]) <= 5
    scores = [r["rerank_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(r["score"] == r["rerank_score"] for r in body["results"])
    assert body["timings_ms"]["total"] >= body["timings_ms"]["embed"]

    pdf_id = docs["manual.pdf"]["id"]
    hits = backend.query("fog", filters={"document_ids": [pdf_id]}).json()["results"]
    assert {h["page"] for h in hits} == {1, 2}
    assert all(h["filename"] == "manual.pdf" for h in hits)
    meta_hits = backend.query("ship", filters={"metadata": {"source": "integration"}}).json()
    assert len(meta_hits["results"]) == sum(d["chunk_count"] for d in docs.values())
    assert backend.query("ship", filters={"metadata": {"source": "x"}}).json()["results"] == []

    plain = backend.query("lighthouse", rerank=False).json()
    assert plain["reranked"] is False
    assert all(r["rerank_score"] is None for r in plain["results"])

    health = backend.client.get("/health").json()
    assert health["status"] == "ok"
    assert health["ml_api"]["reranker"] is not None
    assert health["qdrant"]["points"] >= sum(d["chunk_count"] for d in docs.values())


def test_dedup_sequential_and_concurrent(backend: Backend) -> None:
    data = b"Identical bytes uploaded many times at once. " * 20
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: backend.upload((f"dup{i}.txt", data)), range(8)))
    accepted = [r.json()["documents"][0] for r in responses]
    assert all(r.status_code == 202 for r in responses)
    assert len({a["id"] for a in accepted}) == 1
    assert sum(not a["duplicate"] for a in accepted) == 1
    doc = backend.wait(accepted[0]["id"])
    assert doc["status"] == "indexed"
    again = backend.upload(("later.txt", data)).json()["documents"][0]
    assert again["id"] == doc["id"] and again["duplicate"] is True


def test_new_version_replaces_old(backend: Backend) -> None:
    v1 = backend.ingest("handbook.txt", b"Handbook v1: vacation is 20 days.")
    v2 = backend.ingest("handbook.txt", b"Handbook v2: vacation is 25 days.", replace=v1["id"])
    assert v2["status"] == "indexed" and v2["id"] != v1["id"] and v2["replaces"] == v1["id"]
    assert backend.client.get(f"/documents/{v1['id']}").status_code == 404
    hits = backend.query("vacation days", top_k=100).json()["results"]
    ids = {h["document_id"] for h in hits if h["filename"] == "handbook.txt"}
    assert ids == {v2["id"]}


def test_upload_rejections_over_http(backend: Backend) -> None:
    cases = [
        (("x.exe", b"MZ\x90"), 415, "x.exe: unsupported file type"),
        (("empty.pdf", b""), 422, "empty.pdf: the file is empty"),
        (("broken.pdf", b"%PDF-1.5 broken"), 422, "broken.pdf: cannot open the PDF"),
        (("bin.md", b"\x00\xff" * 50), 422, "bin.md: binary content"),
    ]
    for file, status, detail in cases:
        resp = backend.upload(file)
        assert resp.status_code == status, resp.text
        assert resp.json()["detail"].startswith(detail)
    resp = backend.client.post("/query", json={"query": "q", "top_k": 1000})
    assert resp.status_code == 422 and resp.json()["detail"].startswith("top_k:")


def test_delete_leaves_no_points(ml_api: str, start_backend: StartBackend) -> None:
    b = start_backend(ml_api_url=ml_api, chunk_size="32")
    keep = b.ingest("keep.txt", TEXT.encode())
    drop = b.ingest("drop.txt", (TEXT + " Extra sentence about seagulls.").encode() * 5)
    assert drop["chunks_stored"] > 1
    assert b.client.delete(f"/documents/{drop['id']}").status_code == 204
    assert b.client.get(f"/documents/{drop['id']}").status_code == 404
    b.stop()
    # Count in the Qdrant folder itself, now that the backend released it.
    assert count_points(b.data_dir, drop["id"]) == 0
    assert count_points(b.data_dir, keep["id"]) == keep["chunk_count"]


def big_document(sentences: int = 3000) -> str:
    return " ".join(f"Sentence {i} of a long report on coastal erosion." for i in range(sentences))


SLOW_INGEST = {"chunk_size": "16", "chunk_overlap": "0", "embed_batch_size": "1"}


def wait_embedding(b: Backend, doc_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = b.client.get(f"/documents/{doc_id}").json()
        if doc["status"] == "embedding" and doc["progress"]["chunks_done"] > 0:
            return doc
        assert doc["status"] in ("queued", "parsing", "embedding"), doc
        time.sleep(0.05)
    raise TimeoutError(f"{doc_id} never started embedding")


def test_ml_api_stopped_mid_ingest(start_ml_api: Any, start_backend: StartBackend) -> None:
    ml = start_ml_api()
    b = start_backend(ml_api_url=ml.url, embed_concurrency="1", **SLOW_INGEST)
    doc_id = b.upload(("erosion.txt", big_document().encode())).json()["documents"][0]["id"]
    progress = wait_embedding(b, doc_id)
    assert progress["progress"]["chunks_done"] < progress["progress"]["chunks_total"]
    ml.stop()
    doc = b.wait(doc_id, timeout=60)
    assert doc["status"] == "failed", doc
    assert "ml-api" in doc["error"]
    assert doc["chunks_stored"] == 0
    health = b.client.get("/health").json()
    assert health["status"] == "degraded" and health["ml_api"]["status"] == "down"
    resp = b.query("erosion")
    assert resp.status_code == 503 and "ml-api" in resp.json()["detail"]
    assert int(resp.headers["Retry-After"]) >= 1
    # An upload now would only fail later: it is refused up front, and nothing is registered.
    resp = b.upload(("later.txt", b"Uploaded while the ml-api is down."))
    assert resp.status_code == 503 and "ml-api unavailable" in resp.json()["detail"]
    assert int(resp.headers["Retry-After"]) >= 1
    assert b.client.get("/documents").json()["total"] == 1


def test_sigkill_with_several_documents_in_flight(ml_api: str, start_backend: StartBackend) -> None:
    b = start_backend(
        ml_api_url=ml_api, embed_concurrency="1", ingest_concurrency="2", **SLOW_INGEST
    )
    done = b.ingest("small.txt", TEXT.encode())
    files = [(f"report{i}.txt", f"Report {i}. {big_document(300)}".encode()) for i in range(5)]
    resp = b.upload(*files)
    assert resp.status_code == 202, resp.text
    ids = [d["id"] for d in resp.json()["documents"]]
    wait_embedding(b, ids[0])
    before = {i: b.client.get(f"/documents/{i}").json()["status"] for i in ids}
    assert sum(s != "indexed" for s in before.values()) >= 3, before
    b.proc.send_signal(signal.SIGKILL)  # a crash: no shutdown hooks run
    b.proc.wait(timeout=10)
    b.client.close()

    again = start_backend(data_dir=b.data_dir, ml_api_url=ml_api)
    docs = {i: again.client.get(f"/documents/{i}").json() for i in [done["id"], *ids]}
    assert docs[done["id"]]["status"] == "indexed"
    interrupted = [d for d in docs.values() if d["status"] == "failed"]
    assert len(interrupted) >= 3, docs
    for doc in docs.values():
        if doc["status"] == "failed":
            assert doc["error"].startswith("interrupted"), doc
            assert doc["chunks_stored"] == 0
        else:
            assert doc["status"] == "indexed", doc
            assert doc["chunks_stored"] == doc["chunk_count"] > 0
    assert list((b.data_dir / "uploads").iterdir()) == []
    assert again.query("lighthouse").status_code == 200
    # Re-uploading an interrupted file retries it under the same id.
    name = interrupted[0]["filename"]
    retry = again.upload((name, dict(files)[name])).json()["documents"][0]
    assert retry["id"] == interrupted[0]["id"] and retry["duplicate"] is False
    again.client.delete(f"/documents/{retry['id']}")
    again.stop()
    # In Qdrant itself: every indexed document whole, nothing of any other.
    for doc in docs.values():
        expected = doc["chunk_count"] if doc["status"] == "indexed" else 0
        if doc["id"] == retry["id"]:
            expected = 0
        assert count_points(b.data_dir, doc["id"]) == expected, doc


def start_partial_upload(url: str, name: str, data: bytes) -> tuple[socket.socket, bytes]:
    """Send the headers and half the body of an upload; return the socket and the rest."""
    request = httpx.Request("POST", f"{url}/documents", files=[("files", (name, data))])
    body = request.read()
    head = (
        f"POST /documents HTTP/1.1\r\nHost: {request.url.host}\r\n"
        f"Content-Type: {request.headers['content-type']}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock = socket.create_connection((request.url.host, request.url.port), timeout=30)
    half = len(body) // 2
    sock.sendall(head + body[:half])
    return sock, body[half:]


def finish_upload(sock: socket.socket, rest: bytes) -> str:
    sock.sendall(rest)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return answer.decode(errors="replace")


def test_upload_concurrency_and_queue_limits(ml_api: str, start_backend: StartBackend) -> None:
    b = start_backend(
        ml_api_url=ml_api,
        max_concurrent_uploads="1",
        max_pending_documents="2",
        ingest_concurrency="1",
        embed_concurrency="1",
        **SLOW_INGEST,
    )
    # One upload still being received holds the only upload slot.
    sock, rest = start_partial_upload(b.url, "held.txt", b"Held upload. " * 20)
    wait_uploads_in_progress(b, 1)
    resp = b.upload(("second.txt", b"A second upload at the same time."))
    assert resp.status_code == 429
    assert resp.json()["detail"].startswith("too many uploads in progress (1; the limit is 1,")
    assert "MAX_CONCURRENT_UPLOADS" in resp.json()["detail"]
    assert resp.headers["Retry-After"] == "2"
    answer = finish_upload(sock, rest)
    assert answer.startswith("HTTP/1.1 202"), answer
    assert b.client.get("/health").json()["backend"]["uploads_in_progress"] == 0

    # The queue: a slow document ingesting plus one waiting fill MAX_PENDING_DOCUMENTS=2.
    b.wait(b.client.get("/documents").json()["documents"][0]["id"])
    slow = b.upload(("slow.txt", big_document(400).encode())).json()["documents"][0]["id"]
    wait_embedding(b, slow)
    waiting = b.upload(("waiting.txt", b"Waiting for a worker.")).json()["documents"][0]["id"]
    assert b.client.get("/health").json()["backend"]["queue_full"] is True
    resp = b.upload(("third.txt", b"One too many."))
    assert resp.status_code == 429
    assert "the ingestion queue is full" in resp.json()["detail"]
    assert "(MAX_PENDING_DOCUMENTS)" in resp.json()["detail"]
    assert resp.headers["Retry-After"] == "30"
    assert b.query("waiting").status_code == 200  # queries are not affected
    assert b.client.delete(f"/documents/{slow}").status_code == 204
    assert b.wait(waiting)["status"] == "indexed"
    assert b.ingest("third.txt", b"One too many, accepted now.")["status"] == "indexed"

    # An upload aborted mid-body frees its slot, leaves nothing behind and logs no traceback.
    sock, _ = start_partial_upload(b.url, "aborted.txt", b"Aborted upload. " * 20)
    wait_uploads_in_progress(b, 1)
    sock.close()
    wait_uploads_in_progress(b, 0)
    assert b.client.get("/documents").json()["total"] == 3
    assert list((b.data_dir / "uploads").iterdir()) == []
    assert "client disconnected during POST /documents" in b.log()
    assert "Traceback" not in b.log()


def wait_uploads_in_progress(b: Backend, count: int) -> None:
    deadline = time.monotonic() + 10
    while b.client.get("/health").json()["backend"]["uploads_in_progress"] != count:
        assert time.monotonic() < deadline, f"uploads in progress never became {count}"
        time.sleep(0.05)


def test_embedded_mode_allows_one_process(tmp_path: Path, start_backend: StartBackend) -> None:
    first = start_backend(ml_api_url="http://127.0.0.1:9")
    with pytest.raises(RuntimeError) as err:
        launch_backend(first.data_dir, tmp_path / "second.log", ml_api_url="http://127.0.0.1:9")
    message = str(err.value)
    assert "backend exited" in message
    assert "in use by another process" in message
    assert "QDRANT_URL" in message
    assert first.client.get("/health").status_code == 200


# -- the real embedder ---------------------------------------------------------------------------

CORPUS = {
    "volcanoes.txt": "Volcanoes erupt when magma rises through the crust. Lava flows and ash "
    "clouds can bury towns; Mount Vesuvius destroyed Pompeii in 79 AD.",
    "baking.md": "# Sourdough\n\nBread dough rises because yeast ferments the sugars in flour. "
    "Knead the dough, let it proof overnight and bake it in a hot oven.",
    "tennis.html": "<html><body><h1>Tennis</h1><p>A tennis match is won in sets. Serena "
    "Williams won 23 Grand Slam singles titles on grass, clay and hard courts.</p></body></html>",
    "python.txt": "Python is a programming language. Lists, dictionaries and list "
    "comprehensions make data processing concise; pip installs packages.",
    "whales.txt": "Blue whales are the largest animals that ever lived. They feed on krill and "
    "communicate with low-frequency songs across the ocean.",
}
QUESTIONS = {
    "How did Pompeii get destroyed?": "volcanoes.txt",
    "Why does bread rise?": "baking.md",
    "How many grand slams did Serena win?": "tennis.html",
    "How do I install a package for my code?": "python.txt",
    "What is the biggest animal in the sea?": "whales.txt",
}


def test_retrieval_with_minilm_and_no_reranker(
    ml_api_minilm: str, start_backend: StartBackend
) -> None:
    b = start_backend(ml_api_url=ml_api_minilm)
    resp = b.upload(*((name, text.encode()) for name, text in CORPUS.items()))
    assert resp.status_code == 202, resp.text
    for accepted in resp.json()["documents"]:
        assert b.wait(accepted["id"])["status"] == "indexed"
    health = httpx.get(f"{b.url}/health", timeout=10).json()
    assert health["ml_api"]["reranker"] is None
    for question, expected in QUESTIONS.items():
        body = b.query(question, top_k=3).json()
        assert body["reranked"] is False  # no reranker: vector order
        assert body["results"][0]["filename"] == expected, (question, body["results"])
        scores = [r["vector_score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True)
