"""HTTP load generation: closed-loop clients over prepared requests, each answer checked,
and the ml-api's /metrics before and after."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from benchmarks.harness.throughput.verify import Checked

# -- HTTP load ---------------------------------------------------------------------------------


@dataclass
class Request:
    body: bytes
    items: list[int]  # indices into the reference (texts of this request)
    texts: int
    tokens: int


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: list[float]
    texts: int
    tokens: int
    errors: int
    error_samples: list[str]
    min_cos: float | None
    max_abs: float | None
    headers: dict[str, list[float]]
    client_cpu_s: float


TIMING_HEADERS = ("x-queue-time", "x-inference-time", "x-total-time")


Client = Literal["httpx", "aiohttp"]


@dataclass
class Answer:
    status: int
    content: bytes
    headers: Mapping[str, str]


class Transport(Protocol):
    async def post(self, url: str, body: bytes) -> Answer: ...


_JSON = {"content-type": "application/json"}


class _Httpx:
    def __init__(self, client: Any) -> None:
        self.client = client

    async def post(self, url: str, body: bytes) -> Answer:
        r = await self.client.post(url, content=body, headers=_JSON)
        return Answer(r.status_code, r.content, r.headers)


class _Aiohttp:
    def __init__(self, session: Any) -> None:
        self.session = session

    async def post(self, url: str, body: bytes) -> Answer:
        async with self.session.post(url, data=body, headers=_JSON) as r:
            return Answer(r.status, await r.read(), r.headers)


@contextlib.asynccontextmanager
async def transport(client: Client, concurrency: int, timeout: float) -> AsyncIterator[Transport]:
    """httpx (what most Python clients use) or aiohttp (about 2.5x less client CPU per request
    here: a cheaper load generator leaves more of the shared cores to the server)."""
    if client == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as session:
            yield _Aiohttp(session)
        return
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as c:
        yield _Httpx(c)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a failed request raises, for either client (a wrong answer is not one of them)."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    with contextlib.suppress(ImportError):
        import httpx

        errors.append(httpx.HTTPError)
    with contextlib.suppress(ImportError):
        import aiohttp

        errors.append(aiohttp.ClientError)
    return tuple(errors)


async def run_load(
    url: str,
    requests: Sequence[Request],
    concurrency: int,
    check: Callable[[bytes, Request], Checked],
    on_done: Callable[[], None] | None = None,
    timeout: float = 900.0,
    client: Client = "httpx",
) -> LoadResult:
    """`concurrency` closed-loop clients send `requests` in order; wall time from the first send
    to the last answer."""
    latencies: list[float] = []
    errors: list[str] = []
    cos: list[float] = []
    diffs: list[float] = []
    hdrs: dict[str, list[float]] = {h: [] for h in TIMING_HEADERS}
    done_texts = done_tokens = 0
    it = iter(requests)
    transport_errors = _transport_errors()
    async with transport(client, concurrency, timeout) as t:

        async def worker() -> None:
            nonlocal done_texts, done_tokens
            for req in it:
                t0 = time.perf_counter()
                try:
                    resp = await t.post(url, req.body)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if resp.status != 200:
                        errors.append(f"HTTP {resp.status}: {resp.content[:200]!r}")
                    else:
                        res = check(resp.content, req)
                        if not res.ok:
                            errors.append(res.detail)
                        else:
                            latencies.append(elapsed)
                            done_texts += req.texts
                            done_tokens += req.tokens
                            if res.min_cos is not None:
                                cos.append(res.min_cos)
                            if res.max_abs is not None:
                                diffs.append(res.max_abs)
                            for h in TIMING_HEADERS:
                                if h in resp.headers:
                                    hdrs[h].append(float(resp.headers[h]))
                except transport_errors as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                if on_done is not None:
                    on_done()

        cpu0 = time.process_time()
        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - t_start
        cpu = time.process_time() - cpu0
    return LoadResult(
        seconds=seconds,
        latencies_ms=latencies,
        texts=done_texts,
        tokens=done_tokens,
        errors=len(errors),
        error_samples=errors[:5],
        min_cos=min(cos) if cos else None,
        max_abs=max(diffs) if diffs else None,
        headers=hdrs,
        client_cpu_s=cpu,
    )


def scrape_metrics(url: str) -> dict[str, float]:
    """The ml-api's batcher histograms (sum/count), from BentoML's /metrics."""
    import httpx

    out: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(url + "/metrics", timeout=10).text
        pattern = re.compile(
            r'^(ml_api_batch_(?:size|padded_tokens|seconds)_(?:sum|count))\{[^}]*task="(\w+)"[^}]*\}'
            r"\s+([0-9.eE+-]+)"
        )
        for line in text.splitlines():
            m = pattern.match(line)
            if m:
                key = f"{m.group(2)}:{m.group(1)}"
                out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def metrics_delta(before: dict[str, float], after: dict[str, float], task: str) -> dict[str, float]:
    def d(name: str) -> float:
        key = f"{task}:ml_api_batch_{name}"
        return after.get(key, 0.0) - before.get(key, 0.0)

    passes = d("size_count")
    if passes <= 0:
        return {}
    return {
        "forward_passes": passes,
        "items_per_pass": d("size_sum") / passes,
        "padded_tokens": d("padded_tokens_sum"),
        "forward_s": d("seconds_sum"),
    }
