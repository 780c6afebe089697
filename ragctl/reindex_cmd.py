"""`ragctl reindex`: rebuild the corpus with the model the ml-api serves now, and follow it.

The backend keeps every document's extracted text, so nothing is uploaded again: it re-chunks
and re-embeds into a new collection while queries keep using the old one, then switches."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from ragctl.client import BackendClient, BackendError
from ragctl.ingest_cmd import EXIT_FAILED, EXIT_INTERRUPTED, _connection, _fail

console = Console()
POLL_INTERVAL_S = 1.0
FINAL = ("done", "failed", "cancelled", "idle")


def _line(job: dict[str, Any]) -> str:
    state = job.get("state", "?")
    if state == "idle":
        return "no re-index has run"
    parts = [f"re-index {state}"]
    if job.get("done") is not None:
        parts.append(f"{job['done']}/{job.get('total', '?')} documents")
    if job.get("source") or job.get("target"):
        parts.append(f"{job.get('source')} -> {job.get('target')}")
    if job.get("embedder"):
        parts.append(f"model {job['embedder']} ({job.get('dimension')} dims)")
    if job.get("error"):
        parts.append(f"error: {job['error']}")
    return ", ".join(parts)


def reindex(
    status: Annotated[
        bool, typer.Option("--status", help="Only show the current or last re-index.")
    ] = False,
    cancel: Annotated[
        bool, typer.Option("--cancel", help="Cancel the running re-index (nothing changes).")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the re-index until it ends.")
    ] = True,
    url: Annotated[
        str | None,
        typer.Option(help="Backend URL (default: $BACKEND_URL, else http://127.0.0.1:8000)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Backend API key (default: $API_KEY).", show_default=False)
    ] = None,
) -> None:
    """Re-chunk and re-embed every document with the ml-api's current model (no re-upload).
    Queries keep answering meanwhile; exit code 0 when it is done, 1 when it failed."""
    base, key = _connection(url, api_key)

    async def run() -> dict[str, Any]:
        async with BackendClient(base, key, retries=2, transport_retries=0) as api:
            method = "GET" if status else "DELETE" if cancel else "POST"
            job = await api.reindex(method)
            if status or cancel or not wait:
                return job
            shown = ""
            while job.get("state") not in FINAL:
                line = _line(job)
                if line != shown:
                    console.print(line, markup=False, highlight=False)
                    shown = line
                await asyncio.sleep(POLL_INTERVAL_S)
                job = await api.reindex()
            return job

    started = time.monotonic()
    try:
        job = asyncio.run(run())
    except BackendError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        console.print("stopped following; the re-index goes on (ragctl reindex --status)")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    console.print(_line(job), markup=False, highlight=False)
    if wait and not (status or cancel):
        console.print(f"took {time.monotonic() - started:.1f} s", markup=False)
    if job.get("state") == "failed":
        raise typer.Exit(EXIT_FAILED)
