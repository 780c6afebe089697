"""The end-to-end harness (benchmarks/quality.py) against a fake in-process backend.

The fake implements just the public contract the harness relies on: `GET /health`,
`POST /documents` (JSON), `GET /documents` (paged), `POST /query` with `mode`. It "indexes" a
document one poll after upload, splits each text into two chunks and ranks chunks by word
overlap, so the harness's chunk-to-document aggregation and metrics are exercised for real.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from rich.console import Console

from benchmarks import quality


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Table rows on one line each, so the captured output can be searched."""
    monkeypatch.setattr(quality, "console", Console(width=250, force_terminal=False))


def fake_backend(modes: set[str], reranker: str | None = None) -> FastAPI:
    app = FastAPI()
    docs: dict[str, dict[str, Any]] = {}  # id -> {"text", "metadata", "status", "polls"}
    order: list[str] = []

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "ml_api": {"url": None, "status": "ok", "embedder": "fake", "reranker": reranker},
            "qdrant": {"mode": "embedded", "points": 2 * len(docs)},
        }

    @app.post("/documents", status_code=202)
    async def post(request: Request) -> dict[str, Any]:
        body = await request.json()
        assert set(body) == {"text", "title", "metadata"}
        assert len(body["title"]) <= 255
        doc_id = hashlib.sha256(body["text"].encode()).hexdigest()[:16]
        dup = doc_id in docs
        if not dup:
            docs[doc_id] = {"text": body["text"], "metadata": body["metadata"], "polls": 0}
            order.append(doc_id)
        return {"documents": [{"id": doc_id, "status": "queued", "duplicate": dup}]}

    @app.get("/documents")
    async def listing(limit: int = 50, offset: int = 0) -> dict[str, Any]:
        page = order[offset : offset + limit]
        out = []
        for i in page:
            docs[i]["polls"] += 1
            status = "indexed" if docs[i]["polls"] > 1 else "embedding"
            if "FAILME" in docs[i]["text"]:
                status = "failed"
            out.append({"id": i, "status": status})
        nxt = offset + len(page)
        return {
            "documents": out,
            "total": len(order),
            "next_offset": nxt if nxt < len(order) else None,
        }

    @app.post("/query")
    async def query(request: Request) -> dict[str, Any]:
        body = await request.json()
        mode = body.get("mode", "dense")
        if mode not in modes:
            raise HTTPException(422, f"mode: unsupported value {mode!r}")
        words = set(re.findall(r"\w+", body["query"].lower()))
        chunks = []
        for i, d in docs.items():
            text = d["text"].lower()
            half = len(text) // 2
            for part in (text[:half], text[half:]):
                score = len(words & set(re.findall(r"\w+", part)))
                if score:
                    chunks.append((score, i))
        chunks.sort(key=lambda c: (-c[0], c[1]))
        results = [
            {"document_id": i, "metadata": docs[i]["metadata"], "score": float(s), "text": ""}
            for s, i in chunks[: body["top_k"]]
        ]
        rerank = bool(body.get("rerank")) and reranker is not None
        return {"results": results, "reranked": rerank, "timings_ms": {"total": 1.0}}

    return app


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    docs = [
        ("d1", "Aspirin", "aspirin reduces fever in adults"),
        ("d2", "Colds", "vitamin c does not prevent colds"),
        ("d3", "Sleep", "sleep consolidates memory in students"),
        ("d4", "Coffee", "coffee raises heart rate briefly"),
        ("d5", "Noise", "unrelated text about geology and rocks"),
        ("d6", "x" * 300, "a very long title is cut to the backend limit"),
    ]
    (tmp_path / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in docs)
    )
    qs = [("q1", "aspirin fever"), ("q2", "memory sleep"), ("q3", "vitamin colds prevent")]
    (tmp_path / "queries-train.jsonl").write_text(
        "\n".join(json.dumps({"_id": i, "text": t}) for i, t in qs)
    )
    (tmp_path / "qrels-train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq3\td2\t1\n"
    )
    return tmp_path


def run_harness(app: FastAPI, argv: list[str]) -> int:
    args = quality.parse_args(["--url", "http://fake", "--no-reference", *argv])
    return asyncio.run(quality.amain(args, transport=httpx.ASGITransport(app=app)))


def test_harness_end_to_end(beir_dir: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "bench.md"
    report.write_text("# Benchmarks\n")
    app = fake_backend({"dense", "sparse"})
    rc = run_harness(
        app, ["--data", str(beir_dir), "--modes", "dense,sparse,hybrid", "--append", str(report)]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "not supported" in out  # hybrid: 422
    assert "rerank: not available (no reranker model imported)" in out
    md = report.read_text()
    assert md.startswith("# Benchmarks\n\n## Retrieval quality: ")
    assert "- machine: " in md and "cores" in md and "- command: `python " in md
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    # word overlap finds every relevant document at rank 1
    assert rows["dense"].startswith("| dense | 1.0000 | 1.0000 | 1.0000 | 1.0000 |")
    assert rows["sparse"].startswith("| sparse | 1.0000 |")
    assert "not supported" in rows["hybrid"]
    assert not any(name.endswith("+rerank") for name in rows)

    # a second run against the same backend: everything is a duplicate, still scored
    rc = run_harness(app, ["--data", str(beir_dir), "--modes", "dense", "--append", str(report)])
    assert rc == 0
    md = report.read_text()
    assert md.count("## Retrieval quality") == 2
    assert "already registered" in md


def test_harness_rerank_rows_and_failures(beir_dir: Path, capsys) -> None:
    corpus = beir_dir / "corpus.jsonl"
    corpus.write_text(
        corpus.read_text() + "\n" + json.dumps({"_id": "bad", "title": "", "text": "FAILME"})
    )
    app = fake_backend({"dense"}, reranker="fake-reranker")
    rc = run_harness(app, ["--data", str(beir_dir), "--modes", "dense"])
    assert rc == 1  # a failed document makes the run fail
    out = capsys.readouterr().out
    assert "dense +rerank" in out
    assert "1 FAILED" in out and "bad" in out


def test_harness_subset(beir_dir: Path, capsys) -> None:
    app = fake_backend({"dense"})
    rc = run_harness(
        app,
        ["--data", str(beir_dir), "--modes", "dense", "--limit-queries", "1", "--limit-docs", "2"],
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "1 queries, 2 documents" in out.replace("\n", " ")
