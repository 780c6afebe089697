"""`ragctl ingest` (bulk upload of files and folders) and `ragctl query`, against a running
backend.

ingest: folders are walked recursively (hidden files and folders skipped; by default only the
types the backend reads, or what `--glob` matches). Each file is hashed (SHA-256) locally and
compared with the `content_hash` of the documents the backend already has: indexed content is
skipped, content the backend is still ingesting is waited for, failed content is uploaded again
(the backend retries it under the same id). Uploads run `--concurrency` at a time, one file per
request, so one bad file never rejects another. With `--wait` (the default) the command then
follows each document to `indexed` or `failed`. Re-running after an interruption finishes the
rest. Exit code: 0 all good, 1 any file failed (or the backend could not be used), 2 bad
arguments, 130 interrupted.

Each file is sent under its path relative to the parent of the argument that named it
(`ragctl ingest ~/papers` sends `papers/2024/a.pdf`; a file argument sends its bare name), so
files of the same name in different folders stay distinct documents. A changed file sent again
under the same name replaces the backend's newest document of that name (the upload names it in
`replace`, and the backend deletes it once the new one is indexed); `--no-replace` keeps both.

Metadata (`--metadata k=v`, repeatable): `k=v` is a string, `k:=v` a JSON value (`year:=2024`,
`draft:=true`). The same syntax filters queries (`ragctl query --metadata k=v`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import itertools
import json
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ragctl.client import BackendClient, BackendError, default_settings

console = Console()
err_console = Console(stderr=True)

# The extensions the backend parses (backend/ingest/parse.py EXTENSIONS; a test keeps them equal).
SUPPORTED_EXTENSIONS = frozenset(
    {".txt", ".text", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx"}
)
METADATA_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
IN_PROGRESS = ("queued", "parsing", "embedding")
ACTIVE = ("parsing", "embedding")
POLL_INTERVAL_S = 0.5
POLL_BATCH = 32  # documents polled per round at most (the ones being worked on first)
LIST_ROWS = 50  # the summary lists every file up to this many, else only the problems
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    err_console.print(f"error: {message}", soft_wrap=True, markup=False, highlight=False)
    return typer.Exit(code)


# -- arguments -------------------------------------------------------------------------------------


def _connection(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The backend URL and API key: the options, else BACKEND_URL / API_KEY (env or .env)."""
    settings = default_settings()
    if api_key is None and settings.api_key is not None:
        api_key = settings.api_key.get_secret_value()
    return url or settings.backend_url, api_key or None


def parse_metadata(pairs: Iterable[str], *, multi: bool = False) -> dict[str, Any]:
    """`k=v` -> {"k": "v"}; `k:=json` -> {"k": <JSON scalar>}. With `multi`, a repeated key
    collects a list (a query filter matching any of them); otherwise the last one wins."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--metadata {pair!r}: expected KEY=VALUE or KEY:=JSON")
        value: Any = raw
        if key.endswith(":"):
            key = key[:-1]
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise ValueError(f"--metadata {pair!r}: {raw!r} is not a JSON value") from None
            if not isinstance(value, str | int | float | bool):
                raise ValueError(f"--metadata {pair!r}: the value must be a string, number or bool")
        if not METADATA_KEY.match(key):
            raise ValueError(
                f"--metadata {pair!r}: keys are 1-64 letters, digits, '_' or '-' (got {key!r})"
            )
        if multi and key in out:
            previous = out[key] if isinstance(out[key], list) else [out[key]]
            out[key] = [*previous, value]
        else:
            out[key] = value
    return out


@dataclass
class Item:
    """One local file and what happened to it."""

    path: Path
    name: str  # the filename the backend gets
    state: str = "pending"  # pending, reading, uploading, waiting, indexed, skipped, queued, failed
    detail: str = ""
    doc_id: str | None = None
    doc_status: str | None = None
    chunks_done: int = 0
    chunks_total: int | None = None
    last_polled: float = 0.0


def _matches(rel: str, globs: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1].lower()
    for pattern in globs:
        pattern = pattern.lower()
        if fnmatch.fnmatchcase(rel.lower() if "/" in pattern else name, pattern):
            return True
    return False


def collect_files(paths: list[Path], globs: list[str]) -> tuple[list[Item], dict[str, int]]:
    """The files to ingest, in a stable order, and how many of each unsupported extension the
    folder walks left out (only without --glob)."""
    items: list[Item] = []
    seen: set[Path] = set()
    ignored: dict[str, int] = {}

    def add(path: Path, name: str) -> None:
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            items.append(Item(path, name))

    for arg in paths:
        if arg.is_file():
            add(arg, arg.name)  # named explicitly: always taken
            continue
        root = arg.resolve()
        prefix = f"{root.name}/" if root.name else ""
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for filename in sorted(files):
                if filename.startswith("."):
                    continue
                path = Path(folder) / filename
                rel = path.relative_to(root).as_posix()
                if globs:
                    if not _matches(rel, globs):
                        continue
                elif path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                    ext = path.suffix.lower() or "(no extension)"
                    ignored[ext] = ignored.get(ext, 0) + 1
                    continue
                if path.is_file():
                    add(path, prefix + rel)

    # Two different files under one name would replace each other on the backend: give those
    # their path relative to the working directory (or their absolute path) instead.
    by_name: dict[str, list[Item]] = {}
    for item in items:
        by_name.setdefault(item.name, []).append(item)
    cwd = Path.cwd().resolve()
    for group in by_name.values():
        if len(group) > 1:
            for item in group:
                real = item.path.resolve()
                inside = real.is_relative_to(cwd)
                item.name = (real.relative_to(cwd) if inside else real).as_posix()
    return items, ignored


# -- the run ---------------------------------------------------------------------------------------


class Ui:
    """A rich progress bar (files uploaded, chunks indexed) on a terminal; one line per finished
    file otherwise (logs, CI)."""

    def __init__(self, total_files: int, wait: bool) -> None:
        self.live = err_console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=not self.live,
        )
        self.files: TaskID = self.progress.add_task("files uploaded", total=total_files)
        self.chunks: TaskID | None = (
            self.progress.add_task("chunks indexed", total=None) if wait else None
        )

    def __enter__(self) -> Ui:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def file_done(self) -> None:
        self.progress.advance(self.files)

    def event(self, item: Item) -> None:
        """A file reached its final state."""
        if self.live and item.state != "failed":
            return
        style = {"failed": "red", "indexed": "green", "skipped": "dim"}.get(item.state, "")
        text = f"{item.state:<8} {escape(item.name)}"
        if item.detail:
            text += f" — {escape(item.detail)}"
        self.progress.console.print(f"[{style}]{text}[/]" if style else text, soft_wrap=True)

    def note(self, message: str) -> None:
        self.progress.console.print(message, style="yellow", markup=False, soft_wrap=True)

    def chunks_update(self, items: list[Item]) -> None:
        if self.chunks is None:
            return
        tracked = [i for i in items if i.state in ("waiting", "indexed") and i.doc_id]
        known = [i.chunks_total for i in tracked if i.chunks_total]
        total = sum(known) if known else None
        done = sum(i.chunks_done for i in tracked)
        finished = sum(i.state == "indexed" for i in tracked)
        self.progress.update(
            self.chunks,
            total=total,
            completed=done,
            description=f"chunks indexed ({finished}/{len(tracked)} documents)",
        )


def _reason(exc: BackendError, item: Item) -> str:
    """The backend prefixes upload errors with the filename; the summary has its own column."""
    detail = exc.detail
    for prefix in (f"{item.name}: ", f"{item.path.name}: "):
        if detail.startswith(prefix):
            detail = detail[len(prefix) :]
            break
    return f"{detail} (HTTP {exc.status})" if exc.status else detail


@dataclass
class Ingest:
    items: list[Item]
    api: BackendClient
    metadata: dict[str, Any]
    concurrency: int
    wait: bool
    ui: Ui
    known: dict[str, dict[str, Any]] = field(default_factory=dict)  # content_hash -> document
    by_name: dict[str, dict[str, Any]] = field(default_factory=dict)  # filename -> newest doc
    replace: bool = True
    local: dict[str, Item] = field(default_factory=dict)  # content_hash -> first item
    uploads_done: bool = False

    async def run(self) -> None:
        # An unreachable backend is reported at once, not after the retries.
        listing = await self.api.list_documents(transport_retries=0)
        self.known = {d["content_hash"]: d for d in listing}
        for d in listing:  # newest first: the first of each name is the one to replace
            if d.get("filename"):
                self.by_name.setdefault(d["filename"], d)
        sem = asyncio.Semaphore(self.concurrency)
        tasks = [asyncio.create_task(self._one(item, sem)) for item in self.items]
        poller = asyncio.create_task(self._poll())
        try:
            await asyncio.gather(*tasks)
            self.uploads_done = True
            await poller
        finally:
            for task in [*tasks, poller]:
                task.cancel()
            await asyncio.gather(*tasks, poller, return_exceptions=True)

    def _finish(self, item: Item, state: str, detail: str = "") -> None:
        item.state, item.detail = state, detail
        self.ui.event(item)

    async def _one(self, item: Item, sem: asyncio.Semaphore) -> None:
        async with sem:
            try:
                await self._process(item)
            except BackendError as exc:
                self._finish(item, "failed", _reason(exc, item))
            finally:
                self.ui.file_done()

    async def _process(self, item: Item) -> None:
        item.state = "reading"
        try:
            data, digest = await asyncio.to_thread(_read_and_hash, item.path)
        except OSError as exc:
            self._finish(item, "failed", f"cannot read: {exc.strerror or exc}")
            return
        first = self.local.setdefault(digest, item)
        if first is not item:
            self._finish(item, "skipped", f"same content as {first.name}")
            return
        doc = self.known.get(digest)
        if doc is not None and doc["status"] == "indexed":
            item.doc_id = doc["id"]
            self._finish(item, "skipped", f"already indexed as {doc['filename'] or doc['id']}")
            return
        if doc is not None and doc["status"] in IN_PROGRESS:
            # The backend is still ingesting this content (an earlier, interrupted run?).
            item.doc_id, item.doc_status = doc["id"], doc["status"]
            if self.wait:
                item.state, item.detail = "waiting", "was already being ingested"
            else:
                self._finish(item, "queued", f"already being ingested ({doc['status']})")
            return
        item.state = "uploading"
        older = self.by_name.get(item.name) if self.replace else None
        replace = older["id"] if older is not None and older["content_hash"] != digest else None
        accepted = await self.api.upload(item.name, data, self.metadata, replace=replace)
        item.doc_id, item.doc_status = accepted["id"], accepted["status"]
        if accepted.get("duplicate") and accepted["status"] == "indexed":
            name = accepted.get("filename") or accepted["id"]
            self._finish(item, "skipped", f"already indexed as {name}")
        elif not self.wait:
            self._finish(item, "queued", f"uploaded ({accepted['status']})")
        else:
            item.state = "waiting"

    async def _poll(self) -> None:
        """Follow the documents being ingested until each is indexed or failed."""
        sem = asyncio.Semaphore(self.concurrency)
        while True:
            waiting = [i for i in self.items if i.state == "waiting"]
            if not waiting and self.uploads_done:
                return
            # Documents being worked on first, then the ones polled longest ago.
            waiting.sort(key=lambda i: (i.doc_status not in ACTIVE, i.last_polled))
            await asyncio.gather(*(self._check(i, sem) for i in waiting[:POLL_BATCH]))
            self.ui.chunks_update(self.items)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _check(self, item: Item, sem: asyncio.Semaphore) -> None:
        assert item.doc_id is not None
        async with sem:
            item.last_polled = time.monotonic()
            try:
                doc = await self.api.get_document(item.doc_id)
            except BackendError as exc:
                if exc.status == 404:
                    reason = "the document is gone (deleted, or replaced by a newer upload)"
                else:
                    reason = f"cannot follow its status: {exc}"
                self._finish(item, "failed", reason)
                return
        item.doc_status = doc["status"]
        progress = doc.get("progress") or {}
        item.chunks_done = progress.get("chunks_done") or 0
        item.chunks_total = progress.get("chunks_total")
        if doc["status"] == "indexed":
            count = doc.get("chunk_count") or item.chunks_done
            item.chunks_done = item.chunks_total = count
            extra = f"; {item.detail}" if item.detail else ""
            self._finish(item, "indexed", f"{count} chunks{extra}")
        elif doc["status"] == "failed":
            self._finish(item, "failed", doc.get("error") or "failed (no reason given)")


def _read_and_hash(path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def _summary(items: list[Item], interrupted: bool) -> None:
    order = {"failed": 0, "interrupted": 1, "not started": 2}
    for item in items:
        if interrupted and item.state not in ("indexed", "skipped", "failed", "queued"):
            if item.state == "pending":
                item.state, item.detail = "not started", ""
            elif item.state == "waiting":
                item.state = "interrupted"
                item.detail = "uploaded; the backend is still indexing it (run again to check)"
            else:
                item.state, item.detail = "interrupted", f"stopped while {item.state}"
    shown = [i for i in items if i.state in order] if len(items) > LIST_ROWS else items
    shown = sorted(shown, key=lambda i: (order.get(i.state, 9), i.name))
    if shown:
        table = Table(title="ragctl ingest", title_justify="left")
        table.add_column("file", overflow="fold")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        colors = {"indexed": "green", "skipped": "dim", "failed": "red", "interrupted": "yellow"}
        for item in shown:
            color = colors.get(item.state, "")
            result = f"[{color}]{item.state}[/]" if color else item.state
            table.add_row(escape(item.name), result, escape(item.detail))
        console.print(table)
    counts: dict[str, int] = {}
    for item in items:
        counts[item.state] = counts.get(item.state, 0) + 1
    chunks = sum(i.chunks_done for i in items if i.state == "indexed")
    parts = [
        f"{counts.get('indexed', 0)} indexed ({chunks} chunks)",
        f"{counts.get('skipped', 0)} skipped",
        f"{counts.get('failed', 0)} failed",
    ]
    labels = {"queued": "uploaded (not waited for)", "interrupted": "interrupted"}
    labels["not started"] = "not started"
    parts += [f"{counts[s]} {label}" for s, label in labels.items() if counts.get(s)]
    console.print("Summary: " + ", ".join(parts), markup=False, highlight=False)
    if interrupted:
        console.print("Interrupted. Run the same command again to finish the rest.")


def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Files and folders (walked recursively).", exists=True),
    ],
    glob: Annotated[
        list[str] | None,
        typer.Option(
            "--glob",
            help="In folders, only files matching this pattern (repeatable; '*.pdf'; with a '/' "
            "it matches the path inside the folder). Default: every type the backend reads.",
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata", "-m", help="KEY=VALUE (string) or KEY:=JSON, on every file (repeatable)."
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Backend URL (default: $BACKEND_URL, else http://127.0.0.1:8000)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Backend API key (default: $API_KEY).", show_default=False)
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Uploads in flight.")] = 4,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow each document until indexed.")
    ] = True,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace/--no-replace",
            help="A changed file replaces the backend's document of the same name (default), "
            "or is added beside it.",
        ),
    ] = True,
) -> None:
    """Upload files and folders to the backend; skip content it already has."""
    try:
        meta = parse_metadata(metadata or [])
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    items, ignored = collect_files(paths, glob or [])
    if ignored:
        what = ", ".join(f"{n} {ext}" for ext, n in sorted(ignored.items()))
        err_console.print(f"left out (type the backend does not read): {what}", markup=False)
    if not items:
        err_console.print("nothing to ingest", markup=False)
        return

    base, key = _connection(url, api_key)
    ui = Ui(len(items), wait)
    api = BackendClient(base, key, on_retry=ui.note)
    job = Ingest(items, api, meta, concurrency, wait, ui, replace=replace)
    interrupted = False
    error: BackendError | None = None

    async def main() -> None:
        nonlocal interrupted, error
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)  # SIGTERM stops like Ctrl-C
        try:
            with ui:
                await job.run()
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task
            interrupted = True
        except BackendError as exc:
            error = exc
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            await api.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # a second Ctrl-C
        interrupted = True
    if error is not None:  # the listing at the start failed: nothing was done
        raise _fail(str(error) if error.status == 0 else f"{api.url}: {error}")
    _summary(items, interrupted)
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if any(i.state == "failed" for i in items):
        raise typer.Exit(EXIT_FAILED)


# -- query -----------------------------------------------------------------------------------------


def _excerpt(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _around(r: dict[str, Any]) -> tuple[str, str]:
    """The context chunks' text before and after a hit, without the overlap neighbouring chunks
    share (cut by their offsets when on the same page as what follows or precedes them)."""
    before_chunks = r.get("context_before") or []
    before = ""
    for c, nxt in itertools.pairwise([*before_chunks, r]):
        same_page = c.get("page") == nxt.get("page")
        before += c["text"][: max(0, nxt["start"] - c["start"])] if same_page else c["text"]
    after, prev = "", r
    for c in r.get("context_after") or []:
        same_page = c.get("page") == prev.get("page")
        after += c["text"][max(0, prev["end"] - c["start"]) :] if same_page else c["text"]
        prev = c
    return before, after


def _passage(r: dict[str, Any]) -> str:
    text = escape(_excerpt(r.get("text", "")))
    before, after = _around(r)
    if not before and not after:
        return text
    pre = escape(_excerpt(before, 120)[-120:]) if before else ""
    post = escape(_excerpt(after, 120)) if after else ""
    return f"[dim]{pre}[/dim] [bold]{text}[/bold] [dim]{post}[/dim]".strip()


def _print_results(body: dict[str, Any]) -> None:
    results = body.get("results") or []
    grouped = body.get("group_by") == "document"
    if not results:
        console.print("No results.")
    else:
        table = Table(show_lines=False)
        table.add_column("#", justify="right")
        table.add_column("score", justify="right")
        table.add_column("rerank", justify="right")
        table.add_column("file", overflow="fold", max_width=40)
        table.add_column("page", justify="right")
        if grouped:
            table.add_column("hits", justify="right")
        table.add_column("passage", overflow="fold", ratio=1)
        for rank, r in enumerate(results, 1):
            rerank = r.get("rerank_score")
            cells = [
                str(rank),
                f"{r['score']:.4f}",
                "-" if rerank is None else f"{rerank:.4f}",
                escape(r.get("filename") or r.get("document_id", "")),
                "-" if r.get("page") is None else str(r["page"]),
            ]
            if grouped:
                cells.append(str(r.get("matches") or 1))
            table.add_row(*cells, _passage(r))
        console.print(table)
    if body.get("note"):
        console.print(f"note: {body['note']}", markup=False, highlight=False)
    timings = body.get("timings_ms") or {}
    spent = ", ".join(f"{k} {v:.1f} ms" for k, v in timings.items() if isinstance(v, int | float))
    how = "reranked" if body.get("reranked") else "not reranked"
    line = f"{len(results)} results, {how}" + (f"; {spent}" if spent else "")
    console.print(line, markup=False, highlight=False)


def query(
    text: Annotated[str, typer.Argument(metavar="QUERY", help="What to search for.")],
    top_k: Annotated[int, typer.Option(min=1, max=100, help="Results to return.")] = 5,
    rerank: Annotated[
        bool, typer.Option("--rerank/--no-rerank", help="Rerank with the cross-encoder.")
    ] = True,
    mode: Annotated[
        str | None,
        typer.Option(help="dense, sparse or hybrid retrieval (default: the backend's)."),
    ] = None,
    filter_document: Annotated[
        list[str] | None, typer.Option("--filter-document", help="Only this document (repeatable).")
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata", "-m", help="Only documents with KEY=VALUE / KEY:=JSON (repeatable)."
        ),
    ] = None,
    group_by: Annotated[
        str,
        typer.Option(
            help="document: one result per document (its best passage and how many of its "
            "passages matched); chunk: every matching passage."
        ),
    ] = "document",
    context: Annotated[
        int, typer.Option(min=0, max=5, help="Also show this many passages around each hit.")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")] = False,
    url: Annotated[
        str | None,
        typer.Option(help="Backend URL (default: $BACKEND_URL, else http://127.0.0.1:8000)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Backend API key (default: $API_KEY).", show_default=False)
    ] = None,
) -> None:
    """Search the indexed documents (one result per document unless --group-by chunk).
    Exit code 1 on a backend error, 2 on invalid input."""
    if mode is not None and mode not in ("dense", "sparse", "hybrid"):
        raise _fail(f"--mode: expected dense, sparse or hybrid (got {mode!r})", EXIT_USAGE)
    try:
        meta = parse_metadata(metadata or [], multi=True)
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    body: dict[str, Any] = {"query": text, "top_k": top_k, "rerank": rerank}
    if group_by not in ("document", "chunk"):
        raise _fail(f"--group-by: expected document or chunk (got {group_by!r})", EXIT_USAGE)
    if mode is not None:  # sent only when asked, so older backends keep working
        body["mode"] = mode
    if group_by != "chunk":  # the backend's default is chunk: older backends keep working
        body["group_by"] = group_by
    if context:
        body["context"] = context
    filters: dict[str, Any] = {}
    if filter_document:
        filters["document_ids"] = filter_document
    if meta:
        filters["metadata"] = meta
    if filters:
        body["filters"] = filters

    base, key = _connection(url, api_key)

    async def run() -> dict[str, Any]:
        async with BackendClient(base, key, retries=2, transport_retries=0, backoff_s=0.5) as api:
            return await api.query(body)

    try:
        answer = asyncio.run(run())
    except BackendError as exc:
        raise _fail(str(exc), EXIT_USAGE if exc.status == 422 else EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        _print_results(answer)


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(query)
