"""Uploading a BEIR corpus to a running backend through its public API and waiting until every
document is indexed: quality.py, ingest.py and interactive.py all load the backend this way."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.harness.beir import BeirData

TITLE_MAX = 255  # the backend's limit on `title`
RETRY_STATUS = {429, 502, 503, 504}
# Piped output (logs, CI) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass
class IngestReport:
    seconds: float = 0.0
    posted: int = 0
    duplicates: int = 0  # already registered (content-hash) before this run
    failed: list[str] = field(default_factory=list)  # beir ids whose document failed
    doc_to_beir: dict[str, list[str]] = field(default_factory=dict)  # backend id -> beir ids


# -- HTTP helpers --------------------------------------------------------------------------------


async def request(
    client: httpx.AsyncClient, method: str, url: str, retries: int = 6, **kw: Any
) -> httpx.Response:
    """One HTTP call, retried with backoff on connection errors and 429/5xx-unavailable."""
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            resp = await client.request(method, url, **kw)
        except httpx.TransportError:
            if attempt == retries:
                raise
        else:
            if resp.status_code not in RETRY_STATUS or attempt == retries:
                return resp
            retry_after = resp.headers.get("retry-after")
            if retry_after and retry_after.isdigit():
                delay = max(delay, float(retry_after))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


def detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    d = body.get("detail", body) if isinstance(body, dict) else body
    return str(d)[:300]


# -- ingest --------------------------------------------------------------------------------------


def progress_bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


async def ingest(
    client: httpx.AsyncClient, data: BeirData, concurrency: int, timeout_s: float
) -> IngestReport:
    rep = IngestReport()
    sem = asyncio.Semaphore(concurrency)
    beir_to_doc: dict[str, str] = {}
    t0 = time.perf_counter()

    with progress_bars() as progress:
        post_task = progress.add_task("upload", total=len(data.corpus))

        async def post(did: str) -> None:
            doc = data.corpus[did]
            body = {
                "text": doc.full_text,
                # Unique: the backend treats a repeated filename (title) as a new version of
                # that document and replaces it, and SciFact repeats some titles.
                "title": f"{did}: {doc.title or ''}"[:TITLE_MAX],
                "metadata": {"beir_id": did},
            }
            async with sem:
                # The backend bounds its ingest queue (429 + Retry-After): keep waiting.
                resp = await request(client, "POST", "/documents", json=body, retries=500)
            if resp.status_code != 202:
                raise RuntimeError(f"POST /documents ({did}): {resp.status_code} {detail(resp)}")
            accepted = resp.json()["documents"][0]
            beir_to_doc[did] = accepted["id"]
            rep.doc_to_beir.setdefault(accepted["id"], []).append(did)
            if accepted.get("duplicate"):
                rep.duplicates += 1
            progress.advance(post_task)

        await asyncio.gather(*(post(d) for d in data.corpus))
        rep.posted = len(beir_to_doc)

        # wait until every document is indexed or failed
        wanted = set(rep.doc_to_beir)
        wait_task = progress.add_task("indexed", total=len(wanted))
        deadline = time.monotonic() + timeout_s
        status: dict[str, str] = {}
        while True:
            offset: int | None = 0
            while offset is not None:
                resp = await request(
                    client, "GET", "/documents", params={"limit": 500, "offset": offset}
                )
                resp.raise_for_status()
                page = resp.json()
                for d in page["documents"]:
                    if d["id"] in wanted:
                        status[d["id"]] = d["status"]
                offset = page.get("next_offset")
            done = sum(status.get(i) in ("indexed", "failed") for i in wanted)
            progress.update(wait_task, completed=done)
            if done == len(wanted):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(wanted) - done} documents still not indexed after {timeout_s:.0f}s"
                )
            await asyncio.sleep(2.0)
    rep.seconds = time.perf_counter() - t0
    rep.failed = sorted(b for i, s in status.items() if s == "failed" for b in rep.doc_to_beir[i])
    return rep
