"""The ingest measurement: SciFact through the backend against embedding the same chunks alone
(embed, ingest, embed again), shared by ingest.py and throughput.py's ingest stage."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness.backend_ingest import ingest as ingest_documents
from benchmarks.harness.beir import BeirData
from benchmarks.harness.machine import loadavg
from benchmarks.harness.procs import Server
from benchmarks.harness.stack import ROOT, console, start_services

DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "scifact"
# Issue 13's target (issue 5 had 1.25x): ingest at most 1.15x embedding the same chunks alone.
TARGET = 1.15


@dataclass
class Phase:
    name: str
    seconds: float
    chunks: int
    ml_cpu_s: float
    backend_cpu_s: float
    note: str = ""

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


def backend_chunks(ml_url: str, data: BeirData) -> list[str]:
    """The chunk texts the backend makes of these documents (same parser, chunker, settings)."""
    from backend.ingest.chunk import Chunker, load_tokenizer
    from backend.ingest.parse import parse
    from backend.settings import Settings

    settings = Settings()
    info = httpx.get(f"{ml_url}/info", timeout=30).json()["models"]["embedder"]
    tok = load_tokenizer(httpx.get(f"{ml_url}/tokenizer", timeout=30).text)
    chunker = Chunker(
        tok,
        chunk_size=settings.chunk_size,
        overlap=settings.chunk_overlap,
        max_length=info["max_length"],
    )
    texts: list[str] = []
    for doc in data.corpus.values():
        pages = parse("txt", doc.full_text.encode(), max_chars=settings.max_extracted_chars)
        texts += [c.text for c in chunker.split(pages, "txt")]
    return texts


async def embed_all(ml_url: str, texts: list[str], batch: int, concurrency: int) -> float:
    """Embed `texts` through /embed, `concurrency` requests of `batch` texts in flight."""
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            b = queue.get_nowait()
            while True:
                resp = await client.post("/embed", json={"inputs": b, "truncate": True})
                if resp.status_code != 429:
                    break
                await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
            resp.raise_for_status()
            if len(resp.json()) != len(b):
                raise RuntimeError("/embed returned a wrong number of vectors")

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=ml_url, timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return time.perf_counter() - t0


async def stored_state(backend_url: str) -> tuple[int, int, int, int]:
    """(indexed documents, their chunk_count sum, failed documents, points in Qdrant)."""
    docs = chunks = failed = 0
    offset: int | None = 0
    async with httpx.AsyncClient(base_url=backend_url, timeout=120) as client:
        while offset is not None:
            page = (await client.get("/documents", params={"limit": 500, "offset": offset})).json()
            for d in page["documents"]:
                if d["status"] == "indexed":
                    docs += 1
                    chunks += d["chunk_count"] or 0
                elif d["status"] == "failed":
                    failed += 1
            offset = page.get("next_offset")
        points = (await client.get("/health")).json()["qdrant"].get("points", -1)
    return docs, chunks, failed, points


def measure(name: str, ml: Server, backend: Server, chunks: int, run: Any) -> Phase:
    ml0, be0 = ml.cpu_seconds(), backend.cpu_seconds()
    seconds = run()
    phase = Phase(name, seconds, chunks, ml.cpu_seconds() - ml0, backend.cpu_seconds() - be0)
    console.log(
        f"{name}: {seconds:.1f} s, {phase.chunks_per_s:.1f} chunks/s "
        f"(CPU s: ml-api {phase.ml_cpu_s:.0f}, backend {phase.backend_cpu_s:.0f}; "
        f"load {loadavg()})"
    )
    return phase


@dataclass
class IngestResult:
    documents: int
    chunks: int
    phases: list[Phase]
    batch: int
    concurrency: int
    upload_concurrency: int
    ok: bool  # every document indexed, every chunk stored

    @property
    def embed_seconds(self) -> float:
        embeds = [p for p in self.phases if p.name.startswith("embed")]
        return sum(p.seconds for p in embeds) / len(embeds)

    @property
    def ingest(self) -> Phase:
        return next(p for p in self.phases if p.name == "ingest")

    @property
    def ratio(self) -> float:
        return self.ingest.seconds / self.embed_seconds

    @property
    def cpu_ratio(self) -> float:
        embeds = [p for p in self.phases if p.name.startswith("embed")]
        embed_cpu = sum(p.ml_cpu_s + p.backend_cpu_s for p in embeds) / len(embeds)
        return (self.ingest.ml_cpu_s + self.ingest.backend_cpu_s) / embed_cpu

    def summary(self) -> str:
        verdict = "PASS" if self.ratio <= TARGET and self.ok else "MISS"
        return (
            f"ingest / embedding alone = {self.ingest.seconds:.1f} / {self.embed_seconds:.1f} s "
            f"= {self.ratio:.2f}x (target ≤ {TARGET}x): {verdict}; CPU time of both services "
            f"{self.cpu_ratio:.2f}x (less sensitive to other load on the machine)"
        )

    def rows(self) -> list[list[str]]:
        return [
            [
                p.name,
                f"{p.seconds:.1f}",
                f"{p.chunks:,}",
                f"{p.chunks_per_s:.1f}",
                f"{p.ml_cpu_s:.0f}",
                f"{p.backend_cpu_s:.0f}",
                p.note,
            ]
            for p in self.phases
        ]

    def setup(self) -> str:
        return (
            f"SciFact corpus, {self.documents:,} documents (title + abstract as JSON text) -> "
            f"{self.chunks:,} chunks. Embed phases: POST /embed, {self.batch} texts per request, "
            f"{self.concurrency} in flight (the backend's EMBED_BATCH_SIZE x EMBED_CONCURRENCY); "
            f"ingest: POST /documents, {self.upload_concurrency} in flight, backend defaults "
            "(embedded Qdrant), timed until the last document is indexed"
        )


COLUMNS = ["phase", "seconds", "chunks", "chunks/s", "ml-api CPU s", "backend CPU s", "note"]


def run_ingest(data: BeirData, home: Path, work: Path, upload_concurrency: int = 8) -> IngestResult:
    """embed, ingest, embed again, on a fresh ml-api and backend (`home` holds the MiniLM)."""
    from backend.settings import Settings

    defaults = Settings()
    batch, concurrency = defaults.embed_batch_size, defaults.embed_concurrency
    ml, backend = start_services(work, home)
    try:
        texts = backend_chunks(ml.url, data)
        console.log(f"{len(data.corpus):,} documents -> {len(texts):,} chunks")

        def embed() -> float:
            return asyncio.run(embed_all(ml.url, texts, batch, concurrency))

        def ingest() -> float:
            async def go() -> float:
                async with httpx.AsyncClient(base_url=backend.url, timeout=600) as client:
                    rep = await ingest_documents(client, data, upload_concurrency, 7200)
                return rep.seconds

            return asyncio.run(go())

        phases = [measure("embed (1)", ml, backend, len(texts), embed)]
        phases.append(measure("ingest", ml, backend, len(texts), ingest))
        docs, stored, failed, points = asyncio.run(stored_state(backend.url))
        phases[-1].note = (
            f"{docs:,} indexed, {failed} failed; {stored:,} chunks registered, "
            f"{points:,} points in Qdrant"
        )
        ok = stored == points == len(texts) and not failed and docs == len(data.corpus)
        if not ok:
            console.print(f"[red]expected {len(texts)} chunks: {phases[-1].note}")
        phases.append(measure("embed (2)", ml, backend, len(texts), embed))
    finally:
        backend.stop()
        ml.stop()
    return IngestResult(
        len(data.corpus), len(texts), phases, batch, concurrency, upload_concurrency, ok
    )


def subset(data: BeirData, docs: int) -> BeirData:
    return BeirData(dict(list(data.corpus.items())[:docs]), {}, {}) if docs else data
