"""Results people can use and a corpus that survives a model change, through the real stack
(backend process + ml-api + embedded store): grouped results, context around a hit, explicit
replacement, and re-index (model change under concurrent queries, interrupted and resumed)."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_support import Backend, StartBackend
from stack import ROOT

WIDE_EMBEDDER = "tiny-embedder-48"
# Small chunks: documents of a few sentences give several chunks each.
SMALL_CHUNKS = {"chunk_size": "24", "chunk_overlap": "4"}


def numbered(prefix: str, n: int, marker: str | None = None, at: int = -1) -> str:
    """n sentences; sentence `at` also carries `marker`."""
    words = ["river", "stone", "cloud", "lamp", "forest", "engine", "garden", "window"]
    out = []
    for i in range(n):
        extra = f" {marker}" if i == at else ""
        out.append(f"{prefix} sentence {i} talks about the {words[i % len(words)]}{extra}.")
    return " ".join(out)


@pytest.fixture(scope="module")
def backend(ml_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    from backend_support import launch_backend

    tmp = tmp_path_factory.mktemp("lifecycle")
    b = launch_backend(tmp / "data", tmp / "backend.log", ml_api_url=ml_api, **SMALL_CHUNKS)
    yield b
    b.stop()


def test_grouped_results_one_per_document_with_counts(backend: Backend) -> None:
    docs = {
        "many.txt": " ".join(f"aardvark item {i} in a long list of things." for i in range(30)),
        "few.txt": numbered("few", 12, "aardvark", 5),
        "none.txt": numbered("none", 12),
    }
    ids = {name: backend.ingest(name, text.encode())["id"] for name, text in docs.items()}
    flat = backend.query("aardvark", top_k=100, rerank=False, mode="sparse").json()
    per_doc = Counter(r["document_id"] for r in flat["results"])
    assert per_doc[ids["many.txt"]] > 1 and per_doc[ids["few.txt"]] >= 1
    assert len(flat["results"]) < 100  # every matching chunk is in the flat answer

    grouped = backend.query(
        "aardvark", top_k=10, rerank=False, mode="sparse", group_by="document"
    ).json()
    assert grouped["group_by"] == "document"
    got = [r["document_id"] for r in grouped["results"]]
    assert len(got) == len(set(got)) == len(per_doc)
    for r in grouped["results"]:
        assert r["matches"] == per_doc[r["document_id"]]
        best = max(x["score"] for x in flat["results"] if x["document_id"] == r["document_id"])
        assert r["score"] == pytest.approx(best)

    # Reranked: grouped after reranking the flat candidates, still one entry per document.
    reranked = backend.query("aardvark", top_k=10, group_by="document").json()
    rdocs = [r["document_id"] for r in reranked["results"]]
    assert len(rdocs) == len(set(rdocs)) and set(rdocs) <= set(ids.values())
    assert all(r["matches"] >= 1 for r in reranked["results"])
    # The default stays one entry per chunk.
    default = backend.query("aardvark", top_k=100, rerank=False, mode="sparse").json()
    assert default["group_by"] == "chunk" and all(r["matches"] is None for r in default["results"])


def test_context_returns_the_neighbouring_chunks_in_order(backend: Backend) -> None:
    text = numbered("ctx", 40, "zeppelin", 20)
    doc = backend.ingest("context.txt", text.encode())
    assert doc["chunk_count"] >= 6
    body = backend.query("zeppelin", top_k=1, rerank=False, mode="sparse", context=2).json()
    hit = body["results"][0]
    assert hit["document_id"] == doc["id"] and "zeppelin" in hit["text"]
    assert text[hit["start"] : hit["end"]] == hit["text"]
    i = hit["chunk_index"]
    before, after = hit["context_before"], hit["context_after"]
    assert [c["chunk_index"] for c in before] == [j for j in (i - 2, i - 1) if j >= 0]
    assert [c["chunk_index"] for c in after] == [
        j for j in (i + 1, i + 2) if j < doc["chunk_count"]
    ]
    for c in before + after:
        assert text[c["start"] : c["end"]] == c["text"]  # offsets stay exact
    chain = [*before, hit, *after]
    assert all(a["start"] < b["start"] for a, b in itertools.pairwise(chain))
    too_far = backend.query("zeppelin", context=99)
    assert too_far.status_code == 422 and "context" in too_far.text


def test_same_name_uploads_both_remain_and_replace_is_explicit(backend: Backend) -> None:
    a = backend.ingest("report.txt", numbered("team alpha", 6).encode())
    b = backend.ingest("report.txt", numbered("team beta", 6).encode())
    assert a["id"] != b["id"]
    assert backend.client.get(f"/documents/{a['id']}").status_code == 200
    assert backend.client.get(f"/documents/{b['id']}").status_code == 200

    # A replacement names the document it replaces; the answer says so.
    resp = backend.upload(("report.txt", numbered("team alpha v2", 6).encode()), replace=a["id"])
    assert resp.status_code == 202, resp.text
    accepted = resp.json()["documents"][0]
    assert accepted["replaces"] == a["id"]
    new = backend.wait(accepted["id"])
    assert new["status"] == "indexed" and new["replaces"] == a["id"]
    assert backend.client.get(f"/documents/{a['id']}").status_code == 404
    assert backend.client.get(f"/documents/{b['id']}").status_code == 200

    # JSON text uploads take it too.
    resp = backend.client.post(
        "/documents", json={"text": numbered("beta v2", 5), "title": "x", "replace": b["id"]}
    )
    assert resp.status_code == 202 and resp.json()["documents"][0]["replaces"] == b["id"]
    backend.wait(resp.json()["documents"][0]["id"])
    assert backend.client.get(f"/documents/{b['id']}").status_code == 404

    missing = backend.upload(("r.txt", b"some new text"), replace="no-such-id")
    assert missing.status_code == 422 and "replace" in missing.text
    two = backend.client.post(
        "/documents",
        files=[("files", ("1.txt", b"one text")), ("files", ("2.txt", b"two text"))],
        data={"replace": new["id"]},
    )
    assert two.status_code == 422 and "single file" in two.text


def test_registry_written_by_an_older_version_keeps_working(tmp_path: Path) -> None:
    from backend.registry import Registry, Status

    path = tmp_path / "registry.sqlite3"
    db = sqlite3.connect(path)
    # The documents table as the previous release created it.
    db.executescript(
        "CREATE TABLE documents (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " content_hash TEXT NOT NULL, filename TEXT, kind TEXT NOT NULL, size_bytes INTEGER NOT"
        " NULL, pages INTEGER, chunks_done INTEGER NOT NULL DEFAULT 0, chunks_total INTEGER,"
        " chunk_count INTEGER, status TEXT NOT NULL, error TEXT, metadata TEXT NOT NULL DEFAULT"
        " '{}', created_at TEXT NOT NULL, updated_at TEXT NOT NULL, indexed_at TEXT);"
        "INSERT INTO documents (id, content_hash, filename, kind, size_bytes, status, created_at,"
        " updated_at) VALUES ('old', 'h', 'a.txt', 'txt', 3, 'indexed', 't', 't');"
    )
    db.commit()
    db.close()
    reg = Registry(path)
    old = reg.get("old")
    assert old is not None and old.status == Status.INDEXED and old.replaces is None
    doc, new = reg.add(content_hash="h2", filename="a.txt", kind="txt", size_bytes=3)
    assert new and doc.replaces is None  # same name, no replace: a new document
    assert reg.text_usage() == {"documents": 0, "bytes": 0, "raw_bytes": 0}
    reg.close()


# -- re-index --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_ml_api(model_store: Path, start_ml_api: Any, tmp_path_factory: Any) -> Any:
    """An ml-api serving a second tiny embedder of another dimension (48 instead of 32)."""
    import modelfactory

    src = tmp_path_factory.mktemp("wide_src")
    env = {**os.environ, "BENTOML_HOME": str(model_store), "HF_HUB_OFFLINE": "1"}
    if not (model_store / "models" / WIDE_EMBEDDER).exists():
        folder = modelfactory.make_tiny_embedder(src / "emb48", hidden_size=48, seed=1)
        cmd = ["models", "import-embedder", str(folder), "--name", WIDE_EMBEDDER]
        subprocess.run(
            [sys.executable, "-m", "ragctl.main", *cmd], cwd=ROOT, env=env, check=True, timeout=600
        )
    return start_ml_api(embedder=WIDE_EMBEDDER)


def wait_reindex(b: Backend, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = b.client.get("/reindex").json()
        if body["state"] in ("done", "failed", "cancelled"):
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"re-index still {body}")
        time.sleep(0.2)


def found(b: Backend, word: str, doc_id: str) -> bool:
    resp = b.query(word, top_k=5, rerank=False)
    assert resp.status_code == 200, resp.text
    return doc_id in [r["document_id"] for r in resp.json()["results"]]


def test_reindex_with_a_new_model_under_queries_then_interrupted_and_resumed(
    ml_api: str, wide_ml_api: Any, start_backend: StartBackend, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    b1 = start_backend(data, ml_api_url=ml_api, **SMALL_CHUNKS)
    words = [f"marker{chr(97 + i)}{chr(97 + i)}x" for i in range(12)]
    docs = {}
    for i, word in enumerate(words):
        docs[word] = b1.ingest(f"doc{i}.txt", numbered(f"d{i}", 8, word, 3).encode())["id"]
    assert b1.client.get("/health").json()["backend"]["stored_text"]["documents"] == len(words)
    b1.stop()
    # One document as the previous release left it: no kept text (rebuilt from its chunks).
    with sqlite3.connect(data / "registry.sqlite3") as db:
        db.execute("DELETE FROM texts WHERE document_id = ?", (docs[words[0]],))

    # The ml-api now serves a 48-dimensional model: queries answer (BM25) before the re-index.
    b2 = start_backend(data, ml_api_url=wide_ml_api.url, **SMALL_CHUNKS)
    before = b2.query(words[1], top_k=5, rerank=False).json()
    assert before["mode"] == "sparse" and before["note"] and found(b2, words[1], docs[words[1]])

    failures: list[str] = []
    stop = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                for word in words:
                    resp = client.post("/query", json={"query": word, "rerank": False})
                    if resp.status_code != 200:
                        failures.append(f"{resp.status_code} {resp.text[:200]}")
                    elif docs[word] not in [r["document_id"] for r in resp.json()["results"]]:
                        failures.append(f"{word} not found: {resp.json()}")

    queries = threading.Thread(target=hammer, args=(b2.url,), daemon=True)
    queries.start()
    started = b2.client.post("/reindex")
    assert started.status_code == 202, started.text
    assert b2.client.post("/reindex").status_code == 409
    # An upload during the re-index waits and lands in the new collection.
    late = b2.upload(("late.txt", numbered("late", 6, "latecomerword", 2).encode()))
    assert late.status_code == 202
    done = wait_reindex(b2)
    stop.set()
    queries.join(timeout=60)
    assert done["state"] == "done", done
    assert done["dimension"] == 48 and done["done"] == len(words)
    assert failures == []
    late_doc = b2.wait(late.json()["documents"][0]["id"])
    assert late_doc["status"] == "indexed"
    after = b2.query(words[2], top_k=5, rerank=False).json()
    assert after["mode"] == "hybrid" and after["note"] is None
    for word, doc_id in [*docs.items(), ("latecomerword", late_doc["id"])]:
        assert found(b2, word, doc_id), word
        got = b2.client.get(f"/documents/{doc_id}").json()
        assert got["chunks_stored"] == got["chunk_count"] > 0
    health = b2.client.get("/health").json()
    assert health["qdrant"]["collection"] == done["target"]
    assert health["backend"]["stored_text"]["documents"] == len(words) + 1

    # Interrupted: the ml-api freezes mid-way, the backend is killed, then restarted.
    frozen_api = wide_ml_api.proc.pid
    b2.client.post("/reindex")
    try:
        deadline = time.monotonic() + 60
        while b2.client.get("/reindex").json().get("done", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(frozen_api, signal.SIGSTOP)
        os.killpg(b2.proc.pid, signal.SIGKILL)
        b2.proc.wait(timeout=10)
    finally:
        os.killpg(frozen_api, signal.SIGCONT)
    b3 = start_backend(data, ml_api_url=wide_ml_api.url, **SMALL_CHUNKS)
    resumed = wait_reindex(b3)
    assert resumed["state"] == "done" and resumed["target"] != done["target"], resumed
    for word, doc_id in [*docs.items(), ("latecomerword", late_doc["id"])]:
        assert found(b3, word, doc_id), word
        got = b3.client.get(f"/documents/{doc_id}").json()
        assert got["chunks_stored"] == got["chunk_count"] > 0
    assert b3.client.get("/health").json()["qdrant"]["collection"] == resumed["target"]
