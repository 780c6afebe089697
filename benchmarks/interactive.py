"""Interactive-before-bulk benchmark (issue 13): query latency idle and during a bulk ingest.

    uv run python benchmarks/interactive.py [--docs 500] [--src DIR] [--append docs/benchmarks.md]

On a fresh ml-api (all-MiniLM-L6-v2) and backend (defaults, embedded store):

1. ingest `--docs` SciFact documents with nothing else running (the idle ingest rate);
2. idle: one query text through the ml-api (`POST /embed`, c=1) and default `/query` through
   the backend at 1, 8 and 32 concurrent clients;
3. ingest the next `--docs` documents and repeat step 2 while they ingest (the ingest rate
   under query load, and whether the ingest was still running at the end of the measurement).

The ml-api figure (one query's embedding) is measured separately from the backend's `/query`
because the embedded store dominates the latter today; the ratio that matters for the lanes is
the ml-api's during/idle one. `--src` runs the services from another source tree (e.g. an
export of main: `git archive main | tar -x -C /tmp/main-src`) for a before/after comparison with
the same harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.backend_ingest import ingest as ingest_documents  # noqa: E402
from benchmarks.harness.beir import BeirData, load_beir  # noqa: E402
from benchmarks.harness.ingest_run import DEFAULT_DATA  # noqa: E402
from benchmarks.harness.machine import loadavg, machine_info, machine_line  # noqa: E402
from benchmarks.harness.procs import stop_all_servers  # noqa: E402
from benchmarks.harness.report import append_markdown, pct  # noqa: E402
from benchmarks.harness.stack import import_minilm, start_services  # noqa: E402

CONCURRENCY = (1, 8, 32)


@dataclass
class Latency:
    what: str
    clients: int
    ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def row(self, phase: str) -> list[str]:
        p50, p95 = pct(self.ms, 50), pct(self.ms, 95)
        rate = len(self.ms) / self.seconds if self.seconds else 0.0
        return [
            phase,
            self.what,
            str(self.clients),
            f"{p50:.1f}" if p50 is not None else "-",
            f"{p95:.1f}" if p95 is not None else "-",
            f"{rate:.1f}",
            str(self.errors),
        ]


async def load(url: str, path: str, bodies: list[dict], clients: int, what: str) -> Latency:
    """`clients` workers send `bodies` one after the other; latency of each answer."""
    out = Latency(what, clients)
    todo = list(bodies)

    async def worker(client: httpx.AsyncClient) -> None:
        while todo:
            body = todo.pop()
            t0 = time.perf_counter()
            resp = await client.post(path, json=body)
            if resp.status_code == 200:
                out.ms.append((time.perf_counter() - t0) * 1000)
            else:
                out.errors += 1

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    out.seconds = time.perf_counter() - t0
    return out


@dataclass
class HealthProbe:
    """`GET /health` answers while the c=32 load runs (issue 12 item 7: it must stay accurate)."""

    ms: list[float] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        p50, mx = pct(self.ms, 50), max(self.ms) if self.ms else None
        seen = ", ".join(f"{k} x{v}" for k, v in sorted(self.answers.items())) or "none"
        lat = f"p50 {p50:.1f} ms, max {mx:.1f} ms" if p50 is not None and mx is not None else "-"
        return f"/health during c=32: {seen}; {lat}"


async def probe_health(url: str, stop: asyncio.Event, out: HealthProbe) -> None:
    """Poll `/health` every 0.5 s until `stop`; record status code + reported state."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                resp = await client.get("/health")
                try:
                    state = str(resp.json().get("status", "?"))
                except ValueError:
                    state = "unreadable"
                key = f"{resp.status_code} {state}"
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            out.ms.append((time.perf_counter() - t0) * 1000)
            out.answers[key] = out.answers.get(key, 0) + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


async def measure(
    ml: str, backend: str, queries: list[str], per_client: int, health: HealthProbe | None = None
) -> list[Latency]:
    res = [
        await load(ml, "/embed", [{"inputs": q} for q in queries[:40]], 1, "ml-api /embed 1 text")
    ]
    for c in CONCURRENCY:
        n = max(c * per_client, 10)
        bodies = [{"query": q} for q in (queries * (n // len(queries) + 1))[:n]]
        if c == max(CONCURRENCY) and health is not None:
            stop = asyncio.Event()
            probe = asyncio.create_task(probe_health(backend, stop, health))
            res.append(await load(backend, "/query", bodies, c, "backend /query"))
            stop.set()
            await probe
        else:
            res.append(await load(backend, "/query", bodies, c, "backend /query"))
    return res


def take(data: BeirData, start: int, n: int) -> BeirData:
    return BeirData(dict(list(data.corpus.items())[start : start + n]), {}, {})


async def ingest_and_measure(
    ml: str, backend: str, data: BeirData, queries: list[str], per_client: int, health: HealthProbe
) -> tuple[float, list[Latency], bool]:
    async with httpx.AsyncClient(base_url=backend, timeout=600) as client:
        job = asyncio.create_task(ingest_documents(client, data, 8, 7200))
        await asyncio.sleep(5)  # let the ingest reach its steady state
        lat = await measure(ml, backend, queries, per_client, health)
        overlapped = not job.done()
        rep = await job
    return rep.seconds, lat, overlapped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--docs", type=int, default=500, help="documents per ingest phase")
    p.add_argument("--per-client", type=int, default=4, help="queries per client per load")
    p.add_argument("--src", help="run the services from this source tree (before/after)")
    p.add_argument("--label", default="this branch")
    p.add_argument("--append", metavar="MD")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    # where the servers run from (and whose tests/ find the model)
    src = Path(args.src).resolve() if args.src else ROOT
    started = dt.datetime.now(dt.UTC)
    load_start = loadavg()
    beir = load_beir(args.data, "train")
    queries = [q for q in beir.queries.values()][:200]
    with tempfile.TemporaryDirectory(prefix="interactive-bench-") as tmp:
        work = Path(tmp)
        home = work / "bentoml_home"
        try:
            import_minilm(home, src)
            ml, backend = start_services(work, home, src)

            async def idle_ingest() -> float:
                async with httpx.AsyncClient(base_url=backend.url, timeout=600) as client:
                    return (
                        await ingest_documents(client, take(beir, 0, args.docs), 8, 7200)
                    ).seconds

            idle_s = asyncio.run(idle_ingest())
            health_idle, health_busy = HealthProbe(), HealthProbe()
            idle = asyncio.run(measure(ml.url, backend.url, queries, args.per_client, health_idle))
            busy_s, busy, overlapped = asyncio.run(
                ingest_and_measure(
                    ml.url,
                    backend.url,
                    take(beir, args.docs, args.docs),
                    queries,
                    args.per_client,
                    health_busy,
                )
            )
        finally:
            stop_all_servers()
    rows = [r.row("idle") for r in idle] + [r.row("during ingest") for r in busy]
    ml_idle, ml_busy = pct(idle[0].ms, 50), pct(busy[0].ms, 50)
    ratio = (ml_busy / ml_idle) if ml_idle and ml_busy else float("nan")
    rate_idle, rate_busy = args.docs / idle_s, args.docs / busy_s
    summary = (
        f"{args.label}: ingest {rate_idle:.1f} docs/s idle, {rate_busy:.1f} docs/s under queries "
        f"({rate_busy / rate_idle:.2f}x); ml-api one-query p50 during ingest / idle = "
        f"{ml_busy:.1f} / {ml_idle:.1f} ms = {ratio:.2f}x (target <= 1.5x); the ingest "
        f"{'was' if overlapped else 'was NOT'} still running when the queries ended. "
        f"Idle {health_idle.summary()}. During ingest {health_busy.summary()}."
    )
    cols = ["phase", "what", "clients", "p50 ms", "p95 ms", "req/s", "errors"]
    m = machine_info()
    md = [
        f"## Interactive during bulk ingest ({args.label})",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- {machine_line(m, 'cuda' if m['gpu'] else 'cpu')}",
        f"- Command: `uv run python benchmarks/interactive.py --docs {args.docs}"
        + (" --src <export of main>" if args.src else "")
        + "`",
        f"- Load average: start {load_start}; end {loadavg()}",
        "",
        "| " + " | ".join(cols) + " |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        summary,
        "",
    ]
    text = "\n".join(md)
    print(text)
    if args.append:
        append_markdown(ROOT / args.append, text, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
