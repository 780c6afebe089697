"""`ragctl ingest` / `ragctl query` against a stand-in backend (FastAPI in a thread) that can
answer 429, hang, require an API key and page its listing: the behaviours that are hard to
provoke in the real backend. The real stack is covered by test_cli.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_support import free_port
from cli_support import cli_env, ragctl
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ragctl.client import BackendClient, BackendError, retry_after_seconds
from ragctl.ingest_cmd import SUPPORTED_EXTENSIONS, collect_files, parse_metadata


@dataclass
class Stub:
    url: str = ""
    api_key: str | None = None
    page_cap: int = 2  # the listing pages by 2, so the CLI must follow next_offset
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: list[tuple[str, str | None]] = field(default_factory=list)
    busy: dict[str, int] = field(default_factory=dict)  # filename -> 429s still to answer
    fail: set[str] = field(default_factory=set)  # filenames whose ingestion fails
    hanging: threading.Event = field(default_factory=threading.Event)  # a hang upload arrived
    release: threading.Event = field(default_factory=threading.Event)  # hang uploads may end
    queries: list[dict[str, Any]] = field(default_factory=list)
    replaces: dict[str, str | None] = field(default_factory=dict)  # filename -> `replace` sent
    reindex: dict[str, Any] = field(default_factory=lambda: {"state": "idle"})

    def add(self, content: bytes, filename: str, status: str) -> dict[str, Any]:
        doc = {
            "id": str(uuid.uuid4()),
            "filename": filename,
            "kind": "txt",
            "status": status,
            "error": "earlier failure" if status == "failed" else None,
            "progress": {"chunks_done": 0, "chunks_total": None},
            "content_hash": hashlib.sha256(content).hexdigest(),
            "chunk_count": 2 if status == "indexed" else None,
            "metadata": {},
            "polls": 0,
        }
        self.docs[doc["id"]] = doc
        return doc

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def auth(request: Request, call_next: Any) -> Any:
            given = request.headers.get("authorization")
            if self.api_key and given != f"Bearer {self.api_key}":
                return JSONResponse({"detail": "missing or invalid API key"}, 401)
            return await call_next(request)

        @app.get("/documents")
        async def listing(limit: int = 50, offset: int = 0) -> dict[str, Any]:
            docs = list(self.docs.values())
            page = docs[offset : offset + min(limit, self.page_cap)]
            following = offset + len(page)
            return {
                "documents": page,
                "total": len(docs),
                "limit": limit,
                "offset": offset,
                "next_offset": following if following < len(docs) else None,
            }

        @app.post("/documents")
        async def upload(request: Request) -> Any:
            form = await request.form()
            upload = form.getlist("files")[0]
            name = upload.filename
            meta = form.get("metadata")
            self.posts.append((name, meta if isinstance(meta, str) else None))
            replace = form.get("replace")
            self.replaces[name] = replace if isinstance(replace, str) else None
            if self.busy.get(name, 0) > 0:
                self.busy[name] -= 1
                return JSONResponse({"detail": "busy"}, 429, headers={"Retry-After": "1"})
            if "hang" in name:
                self.hanging.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.05)
                return JSONResponse({"detail": "stub stopped"}, 503)
            data = await upload.read()
            digest = hashlib.sha256(data).hexdigest()
            doc = next((d for d in self.docs.values() if d["content_hash"] == digest), None)
            duplicate = doc is not None and doc["status"] != "failed"
            if doc is None:
                doc = self.add(data, name, "queued")
            elif doc["status"] == "failed":
                doc.update(status="queued", error=None, polls=0, filename=name)
            doc["metadata"] = json.loads(meta) if isinstance(meta, str) else {}
            accepted = {
                "id": doc["id"],
                "filename": doc["filename"],
                "status": doc["status"],
                "status_url": f"/documents/{doc['id']}",
                "duplicate": duplicate,
            }
            return JSONResponse({"documents": [accepted]}, 202)

        @app.get("/documents/{doc_id}")
        async def get(doc_id: str) -> Any:
            doc = self.docs.get(doc_id)
            if doc is None:
                return JSONResponse({"detail": f"document {doc_id} not found"}, 404)
            doc["polls"] += 1
            if doc["status"] in ("queued", "embedding"):
                if doc["polls"] == 1:
                    doc.update(status="embedding", progress={"chunks_done": 1, "chunks_total": 2})
                elif doc["filename"] in self.fail:
                    doc.update(status="failed", error="no extractable text")
                else:
                    doc.update(
                        status="indexed",
                        chunk_count=2,
                        progress={"chunks_done": 2, "chunks_total": 2},
                    )
            return doc

        @app.post("/reindex")
        async def start_reindex() -> Any:
            if self.reindex["state"] == "running":
                return JSONResponse({"detail": "a re-index is already running"}, 409)
            self.reindex = {"state": "running", "source": "a", "target": "b", "done": 0}
            self.reindex.update(total=3, embedder="e:1", dimension=48)
            return JSONResponse(self.reindex, 202)

        @app.get("/reindex")
        async def reindex_status() -> Any:
            job = self.reindex
            if job["state"] == "running":  # one document per poll
                job["done"] += 1
                if job["done"] == job["total"]:
                    job["state"] = "done"
            return job

        @app.post("/query")
        async def query(body: dict[str, Any]) -> Any:
            self.queries.append(body)
            if body["query"] == "bad":
                return JSONResponse({"detail": "top_k: too many"}, 422)
            if body["query"] == "down":
                return JSONResponse({"detail": "the ml-api is unavailable"}, 503)
            hit = {
                "text": "A passage\nabout   [bold]lighthouses[/bold].",
                "score": 0.91234,
                "vector_score": 0.91234,
                "rerank_score": None,
                "document_id": "d1",
                "filename": "docs/keeper.txt",
                "metadata": {},
                "page": 2,
                "start": 0,
                "end": 10,
                "chunk_index": 0,
            }
            timings = {"embed": 1.5, "search": 0.5, "rerank": 0.0, "total": 2.25}
            return {"results": [hit], "reranked": False, "timings_ms": timings}

        return app


@pytest.fixture
def stub() -> Iterator[Stub]:
    import uvicorn

    state = Stub()
    port = free_port()
    state.url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(
        state.app(), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "stub backend did not start"
        time.sleep(0.02)
    yield state
    state.release.set()
    server.should_exit = True
    thread.join(10)


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return folder


# -- ingest ----------------------------------------------------------------------------------------


def test_ingest_skips_retries_and_pages(stub: Stub, workdir: Path) -> None:
    stub.api_key = "s3cret"
    stub.busy["corpus/busy.txt"] = 1
    stub.add(b"delta", "elsewhere/known.txt", "indexed")
    stub.add(b"epsilon", "corpus/failed.txt", "failed")
    for i in range(3):  # more pages to list
        stub.add(f"other {i}".encode(), f"other{i}.txt", "indexed")
    corpus = write(
        workdir / "corpus",
        {
            "a.txt": "alpha",
            "sub/dup.txt": "alpha",
            "b.md": "beta",
            "busy.txt": "gamma",
            "known.txt": "delta",
            "failed.txt": "epsilon",
            ".hidden.txt": "hidden",
            ".git/config.txt": "hidden too",
            "image.png": b"\x89PNG",
        },
    )
    args = ["ingest", str(corpus), "-m", "team=docs", "-m", "year:=2024", "--concurrency", "2"]
    proc = ragctl(*args, "--url", stub.url, cwd=workdir, API_KEY="s3cret")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    posted = [name for name, _ in stub.posts]
    # One of the two identical files is uploaded, the other skipped locally; known.txt is
    # skipped without an upload; failed.txt is uploaded again; busy.txt is retried after 429.
    assert posted.count("corpus/busy.txt") == 2
    assert ("corpus/a.txt" in posted) != ("corpus/sub/dup.txt" in posted)
    assert set(posted) - {"corpus/a.txt", "corpus/sub/dup.txt"} == {
        "corpus/b.md",
        "corpus/busy.txt",
        "corpus/failed.txt",
    }
    assert {meta for _, meta in stub.posts} == {'{"team": "docs", "year": 2024}'}
    out = proc.stdout
    assert "Summary: 4 indexed (8 chunks), 2 skipped, 0 failed" in out, out
    assert "already indexed as elsewhere/known.txt" in out
    assert "same content as corpus/" in out
    assert "left out (type the backend does not read): 1 .png" in proc.stderr
    assert "HTTP 429 (busy); retrying in 1.0s" in proc.stderr

    # Without the key: one line, exit 1, nothing uploaded.
    stub.posts.clear()
    proc = ragctl("ingest", str(corpus), "--url", stub.url, cwd=workdir)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {stub.url}: HTTP 401: missing or invalid API key"
    )
    assert "Summary" not in proc.stdout
    assert stub.posts == []


def test_ingest_reports_failures_after_upload(stub: Stub, workdir: Path) -> None:
    stub.fail.add("bad.txt")
    write(workdir, {"bad.txt": "bad", "good.txt": "good"})
    proc = ragctl("ingest", "bad.txt", "good.txt", "--url", stub.url, cwd=workdir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "bad.txt" in line)
    assert "failed" in row and "no extractable text" in row
    assert "Summary: 1 indexed (2 chunks), 0 skipped, 1 failed" in proc.stdout

    # --no-wait: uploaded and left to the backend.
    write(workdir, {"new.txt": "new"})
    proc = ragctl("ingest", "new.txt", "--no-wait", "--url", stub.url, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 indexed (0 chunks), 0 skipped, 0 failed, 1 uploaded (not waited for)" in proc.stdout


def test_ctrl_c_stops_with_a_summary(stub: Stub, workdir: Path) -> None:
    write(workdir / "docs", {"a.txt": "one", "b-hang.txt": "two", "c.txt": "three"})
    cmd = [sys.executable, "-m", "ragctl.main", "ingest", "docs", "--concurrency", "1"]
    proc = subprocess.Popen(
        [*cmd, "--url", stub.url],
        cwd=workdir,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert stub.hanging.wait(30), "the upload of b-hang.txt never arrived"
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - started < 10
    assert proc.returncode == 130, out + err
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ docs/")}
    assert "interrupted" in rows["docs/b-hang.txt"] and "uploading" in rows["docs/b-hang.txt"]
    assert "not started" in rows["docs/c.txt"]
    # a.txt was uploaded; it is indexed, or still being indexed when Ctrl-C came.
    assert "1 indexed" in out or "interrupted" in rows["docs/a.txt"]
    assert "1 not started" in out
    print(out)
    assert "Run the same command again to finish the rest." in out
    assert "Traceback" not in err


def test_unreachable_backend(workdir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    write(workdir, {"a.txt": "alpha"})
    started = time.monotonic()
    proc = ragctl("ingest", "a.txt", "--url", url, cwd=workdir)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the backend at {url}")
    proc = ragctl("query", "anything", cwd=workdir, BACKEND_URL=url)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the backend at {url}")
    assert time.monotonic() - started < 15


def test_ingest_replaces_a_changed_file_of_the_same_name_only(stub: Stub, workdir: Path) -> None:
    old = stub.add(b"first version", "corpus/edited.txt", "indexed")
    corpus = write(workdir / "corpus", {"edited.txt": "second version", "new.txt": "fresh"})
    proc = ragctl("ingest", str(corpus), "--url", stub.url, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stub.replaces == {"corpus/edited.txt": old["id"], "corpus/new.txt": None}

    stub.replaces.clear()
    (corpus / "edited.txt").write_text("third version")
    proc = ragctl("ingest", str(corpus), "--no-replace", "--url", stub.url, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stub.replaces == {"corpus/edited.txt": None}


def test_reindex_follows_progress_until_done(stub: Stub, workdir: Path) -> None:
    proc = ragctl("reindex", "--status", "--url", stub.url, cwd=workdir)
    assert proc.returncode == 0 and "no re-index has run" in proc.stdout
    proc = ragctl("reindex", "--url", stub.url, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "re-index running, 0/3 documents, a -> b, model e:1 (48 dims)" in proc.stdout
    assert "re-index done, 3/3 documents" in proc.stdout
    stub.reindex["state"] = "failed"
    stub.reindex["error"] = "ml-api down"
    proc = ragctl("reindex", "--status", "--url", stub.url, cwd=workdir)
    assert proc.returncode == 1 and "error: ml-api down" in proc.stdout


# -- query -----------------------------------------------------------------------------------------


def test_query_output_and_errors(stub: Stub, workdir: Path) -> None:
    proc = ragctl(
        "query",
        "lighthouse",
        "--top-k",
        "3",
        "--no-rerank",
        "--mode",
        "hybrid",
        "--filter-document",
        "d1",
        "-m",
        "team=a",
        "-m",
        "team=b",
        "-m",
        "year:=2024",
        "--group-by",
        "chunk",
        "--context",
        "2",
        "--json",
        cwd=workdir,
        BACKEND_URL=stub.url,
    )
    assert proc.returncode == 0, proc.stderr
    assert stub.queries[-1] == {  # group_by=chunk is the backend's default: not sent
        "query": "lighthouse",
        "top_k": 3,
        "rerank": False,
        "mode": "hybrid",
        "context": 2,
        "filters": {"document_ids": ["d1"], "metadata": {"team": ["a", "b"], "year": 2024}},
    }
    assert httpx.Response(200, text=proc.stdout).json()["results"][0]["page"] == 2

    proc = ragctl("query", "lighthouse", cwd=workdir, BACKEND_URL=stub.url)
    assert proc.returncode == 0, proc.stderr
    assert stub.queries[-1] == {
        "query": "lighthouse",
        "top_k": 5,
        "rerank": True,
        "group_by": "document",  # ragctl's default: one result per document
    }
    row = next(line for line in proc.stdout.splitlines() if "docs/keeper.txt" in line)
    assert "0.9123" in row and "A passage about [bold]lighthouses[/bold]." in row
    assert row.split("│")[3].strip() == "-" and row.split("│")[5].strip() == "2"
    assert "1 results, not reranked; embed 1.5 ms, search 0.5 ms, rerank 0.0 ms" in proc.stdout

    for args, code, message in [
        (["bad"], 2, "error: HTTP 422: top_k: too many"),
        (["down"], 1, "error: HTTP 503: the ml-api is unavailable"),
        (["q", "--mode", "fuzzy"], 2, "error: --mode: expected dense, sparse or hybrid"),
        (["q", "-m", "bad key=1"], 2, "error: --metadata 'bad key=1': keys are 1-64"),
        (["q", "-m", "n:=[1]"], 2, "error: --metadata 'n:=[1]': the value must be"),
    ]:
        proc = ragctl("query", *args, "--url", stub.url, cwd=workdir)
        assert proc.returncode == code, (args, proc.stderr)
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith(message), line
        assert proc.stdout == ""


# -- units -----------------------------------------------------------------------------------------


def test_parse_metadata() -> None:
    pairs = ["a=1", "b:=1", "c:=true", "d:=1.5", 'e:="x"', "f=", "g=x=y"]
    assert parse_metadata(pairs) == {
        "a": "1",
        "b": 1,
        "c": True,
        "d": 1.5,
        "e": "x",
        "f": "",
        "g": "x=y",
    }
    assert parse_metadata(["k=a", "k=b"]) == {"k": "b"}
    assert parse_metadata(["k=a", "k:=2", "k=c"], multi=True) == {"k": ["a", 2, "c"]}
    for bad in ["novalue", "=v", "a b=1", "k:=nope", "k:={}"]:
        with pytest.raises(ValueError):
            parse_metadata([bad])


def test_collect_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "docs",
        {
            "a.md": "x",
            "B.PDF": "x",
            "notes.txt": "x",
            "pic.jpg": "x",
            "noext": "x",
            ".hidden.md": "x",
            ".cache/c.md": "x",
            "sub/a.md": "x",
            "sub/deeper/d.docx": "x",
        },
    )
    write(tmp_path / "other", {"a.md": "y", "sub/a.md": "z"})
    monkeypatch.chdir(tmp_path)
    items, ignored = collect_files([Path("docs")], [])
    assert [i.name for i in items] == [
        "docs/B.PDF",
        "docs/a.md",
        "docs/notes.txt",
        "docs/sub/a.md",
        "docs/sub/deeper/d.docx",
    ]
    assert ignored == {".jpg": 1, "(no extension)": 1}
    items, _ = collect_files([Path("docs")], ["*.md"])
    assert [i.name for i in items] == ["docs/a.md", "docs/sub/a.md"]
    items, _ = collect_files([Path("docs")], ["sub/*", "*.pdf"])
    assert [i.name for i in items] == ["docs/B.PDF", "docs/sub/a.md", "docs/sub/deeper/d.docx"]
    # Named files are always taken, hidden or not, once; clashing names get longer ones.
    items, _ = collect_files(
        [Path("docs/.hidden.md"), Path("docs/a.md"), Path("docs"), Path("other/a.md")], ["*.txt"]
    )
    assert [i.name for i in items] == [".hidden.md", "docs/a.md", "docs/notes.txt", "other/a.md"]


def test_supported_extensions_match_the_backend() -> None:
    from backend.ingest.parse import EXTENSIONS

    assert set(EXTENSIONS) == SUPPORTED_EXTENSIONS


def test_retry_after_parsing() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(later, now=now.timestamp()) == 30
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds("-3") == 0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None


def test_client_retries_are_bounded() -> None:
    calls: list[str] = []
    waits: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/health" and len(calls) < 3:
            return httpx.Response(503, json={"detail": "warming up"}, headers={"Retry-After": "2"})
        if request.url.path == "/query":
            return httpx.Response(429, json={"detail": "slow down"})
        return httpx.Response(200, json={"status": "ok"})

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def run() -> None:
        api = BackendClient(
            "http://x", retries=3, transport=httpx.MockTransport(handler), sleep=sleep
        )
        async with api:
            assert await api.health() == {"status": "ok"}
            assert waits == [2, 2]
            waits.clear()
            with pytest.raises(BackendError) as err:
                await api.query({"query": "q"})
            assert err.value.status == 429 and err.value.detail == "slow down"
            assert waits == [1, 2, 4]  # exponential without Retry-After, then give up

    asyncio.run(run())
