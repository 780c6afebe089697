"""How long the embedded store's index rebuild pauses the serving process.

The embedded engine (qdrant-edge) holds the GIL in every call, and builds indexes only in
`optimize()`; `backend.store.maintenance` therefore builds in a child process and swaps the
result in. This measures, for N points (384-d random vectors, short texts, the backend's
payload), the longest pause of the event loop while a rebuild runs (a 10 ms ticker), the
rebuild's duration, and hybrid query p50 before and after.

    run-bench uv run python benchmarks/store_rebuild.py --points 20000 100000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from backend.ingest.chunk import Chunk
from backend.settings import Settings
from backend.store import maintenance
from backend.store.edge import EdgeStore

DIM = 384


async def p50_ms(store: EdgeStore, q: list[float], n: int = 30) -> float:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await store.search(q, limit=10, text=f"word{i % 50} text", mode="hybrid")
        lat.append(time.perf_counter() - t)
    return statistics.median(lat) * 1000


async def one(points: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeStore(Settings(_env_file=None, data_dir=Path(tmp)))  # type: ignore[call-arg]
        try:
            await store.ensure_collection(DIM)
            rng = np.random.default_rng(0)
            t = time.perf_counter()
            for d in range(points // 100):
                await store.upsert(
                    document_id=f"d{d}",
                    content_hash=f"h{d}",
                    chunks=[Chunk(i, None, 0, 1, f"word{i} doc{d} text") for i in range(100)],
                    vectors=rng.standard_normal((100, DIM)).astype(np.float32).tolist(),
                    filename=None,
                    metadata={"n": d},
                )
                await store.set_ready(f"h{d}", 100)
            upsert_s = time.perf_counter() - t
            q = rng.standard_normal(DIM).tolist()
            before = await p50_ms(store, q)
            gaps: list[float] = []
            done = False

            async def ticker() -> None:
                last = time.perf_counter()
                while not done:
                    await asyncio.sleep(0.01)
                    now = time.perf_counter()
                    gaps.append(now - last - 0.01)
                    last = now

            task = asyncio.create_task(ticker())
            t = time.perf_counter()
            await maintenance.maintain(store, force=True)
            rebuild_s = time.perf_counter() - t
            done = True
            await task
            after = await p50_ms(store, q)
            return {
                "points": points,
                "upsert_s": upsert_s,
                "rebuild_s": rebuild_s,
                "max_pause_ms": max(gaps) * 1000,
                "p50_before_ms": before,
                "p50_after_ms": after,
            }
        finally:
            await store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, nargs="+", default=[20_000, 100_000])
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(
        f"store rebuild, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        "| points | upsert (s) | rebuild (s) | longest pause (ms) "
        "| hybrid p50 before / after (ms) |"
    )
    print("|---|---|---|---|---|")
    for n in args.points:
        r = asyncio.run(one(n))
        print(
            f"| {n:,} | {r['upsert_s']:.1f} | {r['rebuild_s']:.1f} | {r['max_pause_ms']:.0f} | "
            f"{r['p50_before_ms']:.1f} / {r['p50_after_ms']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
