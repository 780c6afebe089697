"""End-to-end retrieval quality of a RUNNING backend, on a BEIR dataset (default SciFact).

Everything goes through the backend's public HTTP API, exactly as a client would use it:

1. ingest: one JSON `POST /documents {"text": title + " " + text, "title", "metadata":
   {"beir_id"}}` per document, `--concurrency` requests in flight; then poll
   `GET /documents?limit=500&offset=..` until every document is `indexed` (or `failed`).
   Re-running against the same backend is cheap: identical content is reported as a duplicate
   that is already indexed.
2. search: every query through `POST /query {"query", "top_k": 100, "rerank", "mode"}` for each
   `--modes` entry, first without reranking, then with it when the ml-api has a reranker.
   Results are chunks; a document is scored by its best chunk (first occurrence). A mode the
   backend rejects with 422 is reported as "not supported".
3. report: nDCG@10, Recall@10, Recall@100, MRR@10 (pytrec_eval), query latency p50/p95 as seen by
   the client, ingest time, and the in-process reference (sentence-transformers MiniLM + exact
   cosine, whole documents, computed in the same run). `--append docs/benchmarks.md` appends
   the table with the date, machine and command.

    uv run python benchmarks/quality.py                      # full SciFact train split
    uv run python benchmarks/quality.py --limit-queries 100 --limit-docs 1000 --modes dense
    uv run python benchmarks/quality.py --append docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from benchmarks.harness.backend_ingest import (
    IngestReport,
    console,
    detail,
    ingest,
    progress_bars,
    request,
)
from benchmarks.harness.beir import (
    DEFAULT_DATA,
    METRICS,
    BeirData,
    doc_scores_from_hits,
    evaluate,
    load_beir,
    percentile,
    select_subset,
)
from benchmarks.harness.machine import machine_summary


@dataclass
class Row:
    name: str
    metrics: dict[str, float] | None = None  # None: not run (see note)
    p50: float | None = None
    p95: float | None = None
    note: str = ""


# -- queries -------------------------------------------------------------------------------------


@dataclass
class ModeResult:
    run: dict[str, dict[str, float]] | None  # None: mode not supported
    latencies_ms: list[float]
    reranked: int = 0  # responses with reranked=true
    note: str = ""


async def run_queries(
    client: httpx.AsyncClient,
    data: BeirData,
    ingest_rep: IngestReport,
    mode: str,
    rerank: bool,
    top_k: int,
    concurrency: int,
) -> ModeResult:
    qids = list(data.queries)
    body: dict[str, Any] = {"top_k": top_k, "rerank": rerank, "mode": mode}

    # probe once: an unsupported mode is a 422 naming `mode`
    first = data.queries[qids[0]]
    resp = await request(client, "POST", "/query", json={"query": first, **body})
    note = ""
    if resp.status_code == 422:
        why = detail(resp)
        if mode == "dense" and "mode" in why:
            # A backend without modes is a dense-only backend: ask it without the field.
            body.pop("mode")
            note = "backend has no `mode` field; default search"
            resp = await request(client, "POST", "/query", json={"query": first, **body})
        if resp.status_code == 422:
            return ModeResult(None, [], note=f"not supported ({why})")
    if resp.status_code != 200:
        raise RuntimeError(f"POST /query mode={mode}: {resp.status_code} {detail(resp)}")

    def beir_ids(hit: dict[str, Any]) -> list[str | None]:
        ids = ingest_rep.doc_to_beir.get(hit.get("document_id", ""))
        if ids:
            return list(ids)
        return [(hit.get("metadata") or {}).get("beir_id")]

    run: dict[str, dict[str, float]] = {}
    lat: list[float] = []
    reranked = 0
    sem = asyncio.Semaphore(concurrency)

    with progress_bars() as progress:
        task = progress.add_task(f"{mode}{' +rerank' if rerank else ''}", total=len(qids))

        async def one(qid: str) -> None:
            nonlocal reranked
            async with sem:
                t0 = time.perf_counter()
                r = await request(
                    client, "POST", "/query", json={"query": data.queries[qid], **body}
                )
                ms = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                raise RuntimeError(f"POST /query ({qid}, mode={mode}): {r.status_code} {detail(r)}")
            out = r.json()
            lat.append(ms)
            reranked += bool(out.get("reranked"))
            hits = [(b, 0.0) for h in out["results"] for b in beir_ids(h)]
            run[qid] = doc_scores_from_hits(hits)
            progress.advance(task)

        await asyncio.gather(*(one(q) for q in qids))
    return ModeResult(run, lat, reranked, note)


# -- reference -----------------------------------------------------------------------------------


def reference_run(data_dir: Path, split: str, data: BeirData, threads: int) -> tuple[Row, float]:
    """sentence-transformers MiniLM + exact cosine over whole documents (cached embeddings)."""
    from benchmarks.harness.embed_cache import reference_embeddings
    from benchmarks.harness.topk import top_k_runs

    t0 = time.perf_counter()
    dids, qids = list(data.corpus), list(data.queries)
    c, q = reference_embeddings(data_dir, split, dids, qids, threads=threads)
    run = top_k_runs(qids, dids, q @ c.T, 100)
    return (
        Row("reference: MiniLM exact cosine (in-process)", evaluate(data.qrels, run)),
        time.perf_counter() - t0,
    )


# -- machine and report --------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 4) -> str:
    return "" if v is None or v != v else f"{v:.{digits}f}"


def render(rows: list[Row], title: str) -> Table:
    table = Table(title=title)
    table.add_column("run")
    for m in METRICS:
        table.add_column(m, justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    table.add_column("note")
    for r in rows:
        vals = [fmt(r.metrics[m]) if r.metrics else "—" for m in METRICS]
        table.add_row(r.name, *vals, fmt(r.p50, 1), fmt(r.p95, 1), r.note)
    return table


def markdown(rows: list[Row], header: list[str]) -> str:
    lines = [*header, ""]
    lines.append("| run | nDCG@10 | Recall@10 | Recall@100 | MRR@10 | p50 ms | p95 ms | note |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        vals = [fmt(r.metrics[m]) if r.metrics else "—" for m in METRICS]
        note = r.note.replace("|", "\\|")
        lines.append(
            f"| {r.name} | {' | '.join(vals)} | {fmt(r.p50, 1)} | {fmt(r.p95, 1)} | {note} |"
        )
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """The whole run; `transport` lets tests point the client at an in-process app."""
    data = load_beir(args.data, args.split)
    data = select_subset(data, args.limit_queries, args.limit_docs, seed=args.seed)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    console.print(
        f"[bold]{args.data}[/] ({args.split}): {len(data.corpus)} documents, "
        f"{len(data.queries)} queries -> {args.url}"
    )
    headers = {}
    api_key = args.api_key or os.environ.get("API_KEY")
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    timeout = httpx.Timeout(120.0, connect=10.0)
    limits = httpx.Limits(max_connections=max(args.concurrency, args.query_concurrency) + 4)
    rows: list[Row] = []
    notes: list[str] = []
    async with httpx.AsyncClient(
        base_url=args.url.rstrip("/"),
        headers=headers,
        timeout=timeout,
        limits=limits,
        transport=transport,
    ) as client:
        resp = await request(client, "GET", "/health")
        resp.raise_for_status()
        health = resp.json()
        ml = health.get("ml_api") or {}
        qd = health.get("qdrant") or {}
        # does the ml-api have a reranker? ask it directly when we know where it is
        reranker = ml.get("reranker")
        ml_url = args.ml_api or ml.get("url")
        if ml_url:
            try:
                async with httpx.AsyncClient(timeout=10.0) as mlc:
                    mh = (await mlc.get(f"{ml_url.rstrip('/')}/health")).json()
                reranker = (mh.get("models") or {}).get("reranker")
            except (httpx.HTTPError, ValueError) as exc:
                notes.append(f"ml-api {ml_url}/health unreachable ({exc!r}); used backend /health")
        console.print(
            f"backend: qdrant {qd.get('mode')} ({qd.get('points')} points), "
            f"embedder {ml.get('embedder')}, reranker {reranker}"
        )

        rep = await ingest(client, data, args.concurrency, args.ingest_timeout)
        fresh = rep.posted - rep.duplicates
        ingest_note = f"ingest {rep.seconds:.1f}s for {rep.posted} documents"
        if rep.duplicates:
            ingest_note += f" ({rep.duplicates} were already registered: time is not an ingest)"
        elif fresh:
            ingest_note += f" ({fresh / rep.seconds:.1f} docs/s)"
        if rep.failed:
            ingest_note += f"; {len(rep.failed)} FAILED, e.g. {rep.failed[:5]}"
        console.print(ingest_note)
        resp = await request(client, "GET", "/health")
        points = (resp.json().get("qdrant") or {}).get("points") if resp.is_success else None

        passes = [False]
        if not args.no_rerank:
            passes.append(True)
        rerank_state = "not available (no reranker model imported)"
        unsupported: set[str] = set()
        for rerank in passes:
            if rerank and not reranker:
                break
            for mode in modes:
                if mode in unsupported:
                    continue
                name = f"{mode}{' +rerank' if rerank else ''}"
                res = await run_queries(
                    client, data, rep, mode, rerank, args.top_k, args.query_concurrency
                )
                if res.run is None:
                    unsupported.add(mode)
                    rows.append(Row(name, note="not supported"))
                    notes.append(f"mode {mode}: {res.note}")
                    continue
                if rerank and res.reranked == 0:
                    rerank_state = "not available (the backend answered reranked=false)"
                    break
                if rerank:
                    rerank_state = "ok"
                docs_per_q = sum(len(r) for r in res.run.values()) / max(1, len(res.run))
                note = f"{docs_per_q:.0f} docs/query"
                if res.note:
                    note += f"; {res.note}"
                if rerank and res.reranked < len(res.latencies_ms):
                    note = f"reranked {res.reranked}/{len(res.latencies_ms)}; {note}".strip("; ")
                rows.append(
                    Row(
                        name,
                        evaluate(data.qrels, res.run),
                        percentile(res.latencies_ms, 50),
                        percentile(res.latencies_ms, 95),
                        note,
                    )
                )
        if not args.no_rerank and rerank_state != "ok":
            notes.append(f"rerank: {rerank_state}")

    if not args.no_reference:
        ref, secs = reference_run(args.data, args.split, data, args.threads)
        ref.note = f"{secs:.1f}s (embeddings cached in benchmarks/results/)"
        rows.append(ref)

    title = (
        f"{args.data.name} ({args.split}): {len(data.queries)} queries, "
        f"{len(data.corpus)} documents, {points} chunks"
    )
    console.print(render(rows, title))
    for n in [ingest_note, *notes]:
        console.print(n)

    if args.append:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        header = [
            f"## Retrieval quality: {args.data.name} ({args.split}), {when}",
            "",
            f"- machine: {machine_summary()}",
            f"- command: `{shlex.join(['python', *sys.argv])}`",
            f"- backend: {args.url}; Qdrant {qd.get('mode')}; embedder {ml.get('embedder')}; "
            f"reranker {reranker}",
            f"- data: {len(data.queries)} queries, {len(data.corpus)} documents, "
            f"{points} chunks in the collection",
            f"- {ingest_note}",
            *(f"- {n}" for n in notes),
            "- metrics: pytrec_eval; a document is scored by its best chunk, so top_k="
            f"{args.top_k} chunks give fewer documents (docs/query) and Recall@100 is a lower "
            "bound; latency = client-side wall time of `POST /query` "
            f"({args.query_concurrency} in flight)",
        ]
        args.append.parent.mkdir(parents=True, exist_ok=True)
        existing = args.append.read_text() if args.append.exists() else ""
        sep = "\n" if existing and not existing.endswith("\n\n") else ""
        with args.append.open("a", encoding="utf-8") as fh:
            fh.write(sep + markdown(rows, header))
        console.print(f"appended to {args.append}")
    return 1 if rep.failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="backend base URL")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder")
    ap.add_argument("--split", default="train")
    ap.add_argument("--modes", default="dense,sparse,hybrid", help="comma-separated")
    ap.add_argument("--limit-docs", type=int, default=None, help="relevant docs + distractors")
    ap.add_argument("--limit-queries", type=int, default=None, help="first N judged queries")
    ap.add_argument("--seed", type=int, default=0, help="distractor sampling seed")
    ap.add_argument("--concurrency", type=int, default=16, help="uploads in flight")
    ap.add_argument("--query-concurrency", type=int, default=1, help="queries in flight")
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--ingest-timeout", type=float, default=3600.0, help="seconds")
    ap.add_argument("--ml-api", default=None, help="ml-api URL (default: as the backend reports)")
    ap.add_argument("--api-key", default=None, help="backend bearer token (default: $API_KEY)")
    ap.add_argument("--no-rerank", action="store_true", help="skip the +rerank rows")
    ap.add_argument("--no-reference", action="store_true", help="skip the in-process reference")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the reference")
    ap.add_argument("--append", type=Path, default=None, help="append the table to this file")
    return ap.parse_args(argv)


def main() -> None:
    sys.exit(asyncio.run(amain(parse_args())))


if __name__ == "__main__":
    main()
