"""Hostile and careless clients against the backend (issue 17): every input is made here, sent
over HTTP, and answered with the documented status and `{"detail"}` shape while other requests
are still served; nothing is left stuck or orphaned.

Most cases run a real backend process (uvicorn) against the real ml-api. The full-disk cases
run the app in-process (TestClient, real lifespan, embedded Qdrant) and inject the failure at
the registry boundary: its writes raise `sqlite3.OperationalError("database or disk is full")`,
exactly what SQLite raises on a full disk. A small filesystem would need root to mount and would
fail Qdrant's and the spool's writes at unpredictable moments; the injected failure hits the
bookkeeping at a chosen moment (mid-ingest, on DELETE) and is lifted again by the test, which is
what the recovery must survive.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from backend_support import Backend, StartBackend, launch_backend
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.registry import Registry
from backend.settings import Settings

DEEP = 10_000


def deep_list(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int = DEEP) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.fixture(scope="module")
def backend(ml_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp("hardening")
    b = launch_backend(
        tmp / "data",
        tmp / "backend.log",
        ml_api_url=ml_api,
        body_timeout_s="3",
        max_concurrent_uploads="2",
        max_upload_bytes=str(1024 * 1024),
    )
    yield b
    b.stop()


def still_serving(backend: Backend) -> None:
    resp = backend.query("harbour", top_k=1)
    assert resp.status_code == 200, resp.text
    assert backend.proc.poll() is None


def detail(resp: httpx.Response) -> str:
    body = resp.json()
    assert set(body) <= {"detail", "errors"} and isinstance(body["detail"], str), body
    return body["detail"]


# -- row 2: slow bodies ----------------------------------------------------------------------------


def trickle(
    url: str, path: str, headers: dict[str, str], stop: threading.Event, start: bytes = b""
) -> bytes:
    """Send the headers and `start`, then one more byte of body every half second until
    answered or stopped."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode() + start)
        sock.settimeout(0.5)
        answer = b""
        for _ in range(120):  # a minute at most
            if stop.is_set():
                break
            # The server may have closed its side already: read what it answered.
            with contextlib.suppress(OSError):
                sock.sendall(b"-")
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
        return answer + read_rest(sock)


def read_rest(sock: socket.socket) -> bytes:
    """What the server still sends before it closes or goes quiet for 2 s."""
    sock.settimeout(2)
    rest = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            rest += chunk
    return rest


def test_slow_uploads_do_not_hold_the_upload_slots(backend: Backend) -> None:
    stop = threading.Event()
    answers: list[bytes] = []
    headers = {"Content-Type": "multipart/form-data; boundary=xyz", "Content-Length": "100000"}
    start = (
        b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="slow.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nslow"
    )

    def slow() -> None:
        # A client that found both slots busy (a probe upload below held one for a moment) gets
        # 429 before it sends its body: it tries again until it holds a slot and times out.
        for _ in range(60):
            answer = trickle(backend.url, "/documents", headers, stop, start)
            if not answer.startswith(b"HTTP/1.1 429") or stop.is_set():
                break
            time.sleep(0.2)
        answers.append(answer)

    threads = [threading.Thread(target=slow) for _ in range(2)]  # MAX_CONCURRENT_UPLOADS=2
    for t in threads:
        t.start()
    try:
        # First wait until both slots are held by the trickling clients (an upload is refused);
        # then a normal upload gets in once their deadline (BODY_TIMEOUT_S=3) has passed, well
        # before the clients would finish.
        for i in range(300):
            if backend.upload((f"probe{i}.txt", b"A probe about the quay.")).status_code == 429:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the trickling clients never held both upload slots")
        statuses = []
        for i in range(60):
            resp = backend.upload((f"ok{i}.txt", b"A normal upload about the harbour."))
            statuses.append(resp.status_code)
            if resp.status_code == 202:
                break
            assert resp.status_code == 429, resp.text
            time.sleep(1)
        assert statuses[-1] == 202, statuses
        still_serving(backend)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert "BODY_TIMEOUT_S=3" in body["detail"], body


# -- rows 5 and 9: nesting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("json-metadata", lambda: '{"text": "hello", "metadata": ' + deep_object() + "}"),
        ("json-list", deep_list),
        ("multipart-metadata", deep_object),
        ("query", lambda: '{"query": "q", "filters": ' + deep_object() + "}"),
    ],
)
def test_deeply_nested_json_is_422(backend: Backend, kind: str, make: Callable[[], str]) -> None:
    if kind == "multipart-metadata":
        resp = backend.upload(("nested.txt", b"Nested metadata."), metadata=make())
    else:
        path = "/query" if kind == "query" else "/documents"
        resp = backend.client.post(
            path, content=make(), headers={"content-type": "application/json"}
        )
    assert resp.status_code == 422, resp.text
    assert "nested too deeply" in detail(resp)
    still_serving(backend)


# -- row 6: multipart limits -----------------------------------------------------------------------


def test_multipart_limits_are_413_naming_the_limit(backend: Backend) -> None:
    files = [(f"f{i}.txt", f"file {i} about tides".encode()) for i in range(21)]
    resp = backend.upload(*files)
    assert resp.status_code == 413, resp.text
    assert detail(resp) == "multipart body: more than 20 files (MAX_FILES_PER_UPLOAD)"

    fields = {f"field{i}": "x" for i in range(30)}
    resp = backend.upload(("a.txt", b"one file and many fields"), **fields)
    assert resp.status_code == 413, resp.text
    assert detail(resp) == ("multipart body: more than 28 form fields (MAX_FILES_PER_UPLOAD + 8)")

    resp = backend.upload(("a.txt", b"a huge metadata part"), metadata="x" * 2_000_000)
    assert resp.status_code == 413, resp.text
    assert detail(resp).startswith("multipart body: a form field other than a file is over")
    assert backend.client.get("/documents", params={"limit": 500}).status_code == 200
    still_serving(backend)


# -- row 7: JSON bodies are one document at most ---------------------------------------------------


def test_json_upload_body_is_limited_to_one_document(backend: Backend) -> None:
    text = "t" * (5 * 1024 * 1024)  # MAX_UPLOAD_BYTES is 1 MiB here
    body = json.dumps({"text": text}).encode()
    resp = backend.client.post(
        "/documents", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 413, resp.text
    assert detail(resp) == (
        f"request body is {len(body)} bytes; the limit is {2 * 1024 * 1024}"
        " (MAX_UPLOAD_BYTES + 1 MiB for a JSON upload)"
    )
    # Without a Content-Length the read stops at the limit.
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    resp = backend.client.post(
        "/documents", content=chunks, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 413, resp.text
    assert "(MAX_UPLOAD_BYTES + 1 MiB for a JSON upload)" in detail(resp)
    still_serving(backend)


# -- row 10: non-finite numbers --------------------------------------------------------------------


def test_nan_and_infinity_in_metadata_are_422(backend: Backend) -> None:
    for raw in (
        '{"text": "nan metadata", "metadata": {"x": NaN}}',
        '{"text": "inf metadata", "metadata": {"x": -Infinity}}',
    ):
        resp = backend.client.post(
            "/documents", content=raw, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 422, resp.text
        assert detail(resp).startswith("metadata.x"), resp.json()
        assert "finite number" in detail(resp)
    resp = backend.upload(("inf.txt", b"infinite metadata"), metadata='{"x": Infinity}')
    assert resp.status_code == 422, resp.text
    assert detail(resp).startswith("metadata.x") and "finite number" in detail(resp)
    resp = backend.client.post(
        "/query",
        content='{"query": "q", "filters": {"metadata": {"x": NaN}}}',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 422, resp.text
    assert detail(resp).startswith("filters.metadata.x")
    listed = backend.client.get("/documents", params={"limit": 500}).json()["documents"]
    assert not any(d["metadata"] for d in listed)


# -- row 13: pathological HTML ---------------------------------------------------------------------


def test_deeply_nested_html_is_refused_at_upload(backend: Backend) -> None:
    depth = 90_000  # about 1 MB, under MAX_UPLOAD_BYTES (1 MiB here)
    data = ("<html><body>" + "<div>" * depth + "deep" + "</div>" * depth).encode()
    resp = backend.upload(("deep.html", data))
    assert resp.status_code == 422, resp.text
    assert detail(resp) == "deep.html: HTML elements nested more than 4096 deep (fixed limit)"
    # Markup nested 100 deep, many times over, is ordinary and indexes.
    ok = ("<html><body>" + ("<div>" * 100 + "<p>harbour</p>" + "</div>" * 100) * 200).encode()
    doc = backend.ingest("ok.html", ok)
    assert doc["status"] == "indexed", doc
    still_serving(backend)


# -- row 8: the pending-documents cap under concurrency --------------------------------------------


def test_pending_documents_cap_is_exact_under_concurrency(
    start_backend: StartBackend, ml_api: str
) -> None:
    # One worker, one chunk per /embed call: the accepted documents stay pending meanwhile.
    b = start_backend(
        ml_api_url=ml_api,
        max_pending_documents="5",
        ingest_concurrency="1",
        chunk_size="16",
        chunk_overlap="0",
        embed_batch_size="1",
        embed_concurrency="1",
    )
    text = " ".join(f"Sentence {i} about moorings and tides." for i in range(400))
    barrier = threading.Barrier(6)
    results: list[httpx.Response] = []

    def up(i: int) -> None:
        with httpx.Client(base_url=b.url, timeout=60) as c:
            barrier.wait()
            results.append(c.post("/documents", json={"text": f"{i} {text}"}))

    threads = [threading.Thread(target=up, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    codes = sorted(r.status_code for r in results)
    assert codes == [202] * 5 + [429], [r.text for r in results]
    refused = next(r for r in results if r.status_code == 429)
    assert "MAX_PENDING_DOCUMENTS" in detail(refused) and refused.headers["retry-after"]
    health = b.client.get("/health").json()
    assert b.query("moorings").status_code == 200, health


# -- rows 3 and 4: the registry cannot be written --------------------------------------------------


class FullDisk:
    """Registry writes raise what SQLite raises on a full disk while `full` is set."""

    WRITES = ("add", "update", "mark_failed", "mark_indexed", "delete")

    def __init__(self, registry: Registry) -> None:
        self.full = False
        self.refused: dict[str, int] = {}
        for name in self.WRITES:
            setattr(registry, name, self._wrap(name, getattr(registry, name)))

    def _wrap(self, name: str, write: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.full:
                self.refused[name] = self.refused.get(name, 0) + 1
                raise sqlite3.OperationalError("database or disk is full")
            return write(*args, **kwargs)

        return guarded


@pytest.fixture
def disk_api(settings: Settings, ml_api: str) -> Iterator[tuple[TestClient, FullDisk]]:
    slow = {"chunk_size": 16, "chunk_overlap": 0, "embed_batch_size": 1, "embed_concurrency": 1}
    app = create_app(settings.model_copy(update={"ml_api_url": ml_api, **slow}))
    with TestClient(app) as client:
        yield client, FullDisk(client.app.state.registry)  # type: ignore[attr-defined]


def points(client: TestClient, doc_id: str) -> int:
    store = client.app.state.store  # type: ignore[attr-defined]
    return client.portal.call(store.count, doc_id)  # type: ignore[union-attr]


def poll(client: TestClient, doc_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        doc = client.get(f"/documents/{doc_id}").json()
        if done(doc):
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.05)


def test_a_full_disk_mid_ingest_ends_failed_without_orphans(
    disk_api: tuple[TestClient, FullDisk],
) -> None:
    client, disk = disk_api
    text = " ".join(f"Line {i} of the harbour master's ledger." for i in range(300))
    resp = client.post("/documents", json={"text": text, "title": "ledger.txt"})
    assert resp.status_code == 202, resp.text
    doc_id = resp.json()["documents"][0]["id"]
    poll(client, doc_id, lambda d: d["status"] == "embedding" and d["progress"]["chunks_done"] > 0)
    disk.full = True
    # The ingest stops at its next registry write; recording the failure meets the full disk
    # too and is retried in the background (no restart) until the disk has room again.
    deadline = time.monotonic() + 120
    while disk.refused.get("mark_failed", 0) < 2:
        assert time.monotonic() < deadline, disk.refused
        time.sleep(0.05)
    assert client.post("/query", json={"query": "ledger"}).status_code == 200
    disk.full = False
    doc = poll(client, doc_id, lambda d: d["status"] != "embedding")
    assert doc["status"] == "failed", doc
    assert doc["error"].startswith("storage error: database or disk is full"), doc
    assert points(client, doc_id) == 0
    # Failed is retryable: the same content again is a retry under the same id.
    again = client.post("/documents", json={"text": text, "title": "ledger.txt"})
    assert again.status_code == 202, again.text
    accepted = again.json()["documents"][0]
    assert accepted["id"] == doc_id and accepted["duplicate"] is False
    doc = poll(client, doc_id, lambda d: d["status"] in ("indexed", "failed"))
    assert doc["status"] == "indexed" and points(client, doc_id) == doc["chunk_count"], doc


def test_delete_on_a_full_disk_is_503_and_keeps_the_document(
    disk_api: tuple[TestClient, FullDisk],
) -> None:
    client, disk = disk_api
    resp = client.post("/documents", json={"text": "A short note on buoys.", "title": "b.txt"})
    doc_id = resp.json()["documents"][0]["id"]
    doc = poll(client, doc_id, lambda d: d["status"] in ("indexed", "failed"))
    assert doc["status"] == "indexed", doc
    disk.full = True
    resp = client.delete(f"/documents/{doc_id}")
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "30"
    assert "database or disk is full" in detail(resp)  # type: ignore[arg-type]
    resp = client.post("/documents", json={"text": "Another note, while full."})
    assert resp.status_code == 503 and resp.headers["retry-after"], resp.text
    disk.full = False
    assert client.get(f"/documents/{doc_id}").json()["status"] == "indexed"
    assert points(client, doc_id) == doc["chunk_count"]
    assert client.delete(f"/documents/{doc_id}").status_code == 204
    assert client.get(f"/documents/{doc_id}").status_code == 404
    assert points(client, doc_id) == 0
