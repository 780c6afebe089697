"""Load generation: closed-loop clients mixing uploads, queries, status polls, listings and
deletes, the RSS sampler, the prefill and the drain."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter, deque
from typing import Any

import httpx
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from benchmarks.harness.report import f0
from benchmarks.harness.soak.bookkeeping import Doc, KindStats, Sample, median
from benchmarks.harness.soak.common import (
    FINAL,
    MIME,
    console,
)
from benchmarks.harness.soak.data import Source, render
from benchmarks.harness.soak.services import Service

# -- the soak ----------------------------------------------------------------------------------


class SoakLoad:
    """The soak's state and its load: clients, sampler, prefill, drain."""

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

    async def verify(self) -> None:
        """The checks after the drain: SoakVerify (verify.py) has them; run() ends with them."""
        raise NotImplementedError

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
