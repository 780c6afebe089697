"""ml-api memory after large batches: worker RSS after warm-up, after a mixed load of large and
small /embed batches, and after a short rest, for each ONNX Runtime CPU memory mode
(ML_API_ORT_MEMORY: arena, off, shrink).

    uv run python benchmarks/memory.py [--rounds 3] [--append docs/benchmarks.md]

Each variant is a fresh `bentoml serve service:MLService` on all-MiniLM-L6-v2 (imported into a
temporary BENTOML_HOME as `ragctl up` would). Warm-up: the small requests of one round.
Load: `--rounds` rounds of 64-text batches at 512 tokens, 8-text batches at mixed lengths and
single short texts, 4 requests in flight. RSS is summed over the service's process tree.
Target (issue 17): RSS after the load returns to within 10% of its post-warm-up level.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.machine import machine_summary  # noqa: E402
from benchmarks.harness.report import append_markdown  # noqa: E402
from benchmarks.harness.soak.services import Service, prepare_store, start_ml_api  # noqa: E402

WORDS = ["tide", "harbour", "keeper", "lantern", "mooring", "vessel", "ledger", "storm"]


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def batches(rng: random.Random, rounds: int) -> list[list[str]]:
    out: list[list[str]] = []
    for _ in range(rounds):
        out += [[text(rng, 600) for _ in range(64)] for _ in range(4)]  # 512 tokens each
        out += [[text(rng, rng.randint(5, 400)) for _ in range(8)] for _ in range(16)]
        out += [[text(rng, rng.randint(3, 30))] for _ in range(32)]
    rng.shuffle(out)
    return out


async def run_load(url: str, load: list[list[str]], inflight: int = 4) -> int:
    sem = asyncio.Semaphore(inflight)
    failures = 0
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(texts: list[str]) -> None:
            nonlocal failures
            async with sem:
                resp = await client.post("/embed", json={"inputs": texts})
                failures += resp.status_code != 200

        await asyncio.gather(*(one(b) for b in load))
    return failures


def measure(service: Service, rest_s: float) -> float:
    time.sleep(rest_s)
    rss = service.rss_mb()
    assert rss is not None
    return rss


def variant(store: Path, work: Path, mode: str, rounds: int) -> dict[str, float]:
    os.environ["ML_API_ORT_MEMORY"] = mode
    service = start_ml_api(store, work / mode, "minilm", None)
    try:
        rng = random.Random(0)
        # Warm-up as a service starts its day: small requests only.
        warmup = [b for b in batches(rng, 1) if len(b) < 64]
        asyncio.run(run_load(service.url, warmup))
        warm = measure(service, 3)
        started = time.perf_counter()
        failed = asyncio.run(run_load(service.url, batches(rng, rounds)))
        seconds = time.perf_counter() - started
        after = measure(service, 3)
        rest = measure(service, 10)
    finally:
        service.stop()
    return {"warm": warm, "after": after, "rest": rest, "failed": failed, "seconds": seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--append", type=Path, default=None)
    ap.add_argument("--modes", default="arena,off,shrink", help="ML_API_ORT_MEMORY values")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragstack-memory-") as tmp:
        store, work = Path(tmp) / "store", Path(tmp) / "work"
        prepare_store(store, "minilm", None)
        rows = []
        for mode in args.modes.split(","):
            r = variant(store, work, mode, args.rounds)
            growth = (r["rest"] - r["warm"]) / r["warm"] * 100
            rows.append(
                f"| {mode} | {r['warm']:,.0f} | {r['after']:,.0f}"
                f" | {r['rest']:,.0f} | {growth:+.1f}% | {r['seconds']:.0f} | {r['failed']:.0f} |"
            )
            print(rows[-1], flush=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text_out = "\n".join(
        [
            f"## ml-api memory after large batches ({stamp})",
            "",
            f"`uv run python benchmarks/memory.py --rounds {args.rounds}` on {machine_summary()}; "
            "all-MiniLM-L6-v2 on CPU. Load: per round 4 batches of 64 x 512 tokens, 16 of 8 "
            "mixed-length texts, 32 single short texts, 4 in flight. RSS of the service's "
            "process tree in MB; growth = rest vs warm. Target: within 10%.",
            "",
            "| ML_API_ORT_MEMORY | warm | after load | after 10 s rest | growth | load s"
            " | failed |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(text_out)
    if args.append:
        append_markdown(args.append, text_out, intro=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
