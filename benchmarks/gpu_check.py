"""The ml-api on a GPU host, checked and measured in a few minutes: the models in the store
(BENTOML_HOME) load on CUDA (the active ONNX Runtime provider, fp16), the served vectors agree
with float32 on CPU, and how fast it is in-process and over HTTP.

    uv run python benchmarks/gpu_check.py --data ../shared/eval/scifact --out results/gpu.json

It uses the models already in the store (`ragctl models import-defaults` first) and imports
nothing else, so that it runs where only the ml-api's own dependencies are installed (no
sentence-transformers, FlagEmbedding or Infinity: `throughput.py --device cuda` compares those).
Exit status 1 when CUDA is not the active provider or the vectors disagree.

What it measures, one step at a time on the same GPU:
1. in-process: the ml-api's embedding path without HTTP (tokenize, the batcher's plan, one
   forward per sub-batch) on SciFact abstracts: texts/s and tokens/s (fp16 on CUDA);
2. `bentoml serve` with ML_API_DEVICE=cuda: /health's providers for both models; cosine of the
   served vectors against float32 on CPU;
3. over HTTP: 64 clients x 16 abstracts (throughput), 64 clients x 1 short text (the query path)
   with the server's CPU per request, one client x 1 short text (latency), and /rerank with
   (1 query, 100 passages) per request at 8 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import inprocess  # noqa: E402
from benchmarks.harness.machine import machine_info, machine_line, versions  # noqa: E402
from benchmarks.harness.procs import Server, free_port, stop_all_servers  # noqa: E402
from benchmarks.harness.report import f0, f1, pct  # noqa: E402

MIN_COSINE = 0.99  # fp16 on CUDA vs float32 on CPU: MiniLM agrees to ~0.9999


def load_texts(data: Path, limit: int) -> tuple[list[str], list[str]]:
    """SciFact abstracts (long: truncated at the model's length) and claims (short)."""
    long: list[str] = []
    with open(data / "corpus.jsonl") as f:
        for line in f:
            doc = json.loads(line)
            long.append(f"{doc.get('title', '')} {doc['text']}".strip())
            if len(long) >= limit:
                break
    short: list[str] = []
    for name in ("queries-train.jsonl", "queries.jsonl"):
        if (data / name).exists():
            with open(data / name) as f:
                short = [json.loads(line)["text"] for line in f]
            break
    return long, short or [t[:80] for t in long]


def in_process(texts: list[str], device: str) -> dict[str, Any]:
    from models.runtime.embedder import load_embedder
    from models.runtime.settings import MLSettings

    settings = MLSettings(device=device)
    embedder = load_embedder(settings)
    inprocess.embed(embedder, texts[:256], settings)  # warm-up: CUDA graphs, arena, kernels
    n_tokens = sum(len(x) for x in embedder.tokenize(texts, truncate=True))
    t0 = time.perf_counter()
    inprocess.embed(embedder, texts, settings)
    seconds = time.perf_counter() - t0
    return {
        "device": embedder.info.device,
        "providers": embedder.info.providers,
        "dtype": embedder.info.dtype,
        "texts_per_s": len(texts) / seconds,
        "tokens_per_s": n_tokens / seconds,
    }


def cpu_reference(texts: list[str]) -> np.ndarray:
    from models.runtime.embedder import load_embedder
    from models.runtime.settings import MLSettings

    settings = MLSettings(device="cpu")
    return inprocess.embed(load_embedder(settings, gpu=False), texts, settings)


async def load(
    url: str, path: str, bodies: list[dict[str, Any]], clients: int, seconds: float
) -> dict[str, Any]:
    """Closed-loop clients cycling through `bodies` for `seconds`: requests/s and latencies."""
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def client(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                resp = await http.post(path, json=bodies[i % len(bodies)])
                if resp.status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - t0)
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        elapsed = time.perf_counter() - t0
    return {
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": (pct(latencies, 50) or 0) * 1000,
        "p99_ms": (pct(latencies, 99) or 0) * 1000,
    }


def served(args: argparse.Namespace, long: list[str], short: list[str]) -> dict[str, Any]:
    import httpx

    port = free_port()
    env = {**os.environ, "ML_API_DEVICE": args.device, "PYTHONPATH": _pythonpath()}
    log = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "ml-api.log"
    server = Server(
        "ml-api",
        [sys.executable, "-m", "bentoml", "serve", "service:MLService", "--port", str(port)],
        env=env,
        cwd=ROOT,
        log_path=log,
        port=port,
        ready_path="/readyz",
    )
    server.start(timeout=args.start_timeout)
    out: dict[str, Any] = {"start_s": server.start_seconds}
    try:
        out["health"] = httpx.get(server.url + "/health", timeout=10).json()["models"]
        probe = long[:64]
        resp = httpx.post(server.url + "/embed", json={"inputs": probe}, timeout=120)
        resp.raise_for_status()
        got = np.asarray(resp.json(), dtype=np.float32)
        ref = cpu_reference(probe)
        out["min_cosine_vs_cpu_fp32"] = float(np.min(np.sum(got * ref, axis=1)))
        s = args.seconds
        cpu0 = server.cpu_seconds()
        out["c64_x1_short"] = asyncio.run(
            load(server.url, "/embed", [{"inputs": [t]} for t in short], 64, s)
        )
        cpu = server.cpu_seconds() - cpu0
        out["c64_x1_short"]["server_cpu_ms_per_request"] = (
            cpu * 1000 / max(1, out["c64_x1_short"]["requests"])
        )
        batches = [{"inputs": long[i : i + 16]} for i in range(0, len(long) - 15, 16)]
        out["c64_x16_long"] = asyncio.run(load(server.url, "/embed", batches, 64, s))
        out["c64_x16_long"]["texts_per_s"] = out["c64_x16_long"]["requests_per_s"] * 16
        out["c1_x1_short"] = asyncio.run(
            load(server.url, "/embed", [{"inputs": [t]} for t in short], 1, s / 2)
        )
        if out["health"].get("reranker"):
            reranks = [
                {"query": short[i % len(short)], "texts": long[i : i + 100]}
                for i in range(0, max(1, len(long) - 100), 100)
            ]
            out["rerank_c8_x100"] = asyncio.run(load(server.url, "/rerank", reranks, 8, s))
        out["rss_mb"] = server.rss_mb()
    finally:
        out["log_tail"] = server.log_tail(2000)
        server.stop()
    return out


def _pythonpath() -> str:
    parts = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys(parts))


def report(result: dict[str, Any]) -> str:
    ip, sv = result["in_process"], result["served"]
    emb = sv["health"]["embedder"]
    rr = sv["health"].get("reranker") or {}
    rows = [
        (
            "embedder device / providers / dtype",
            f"{emb['device']} / {emb['providers']} / {emb['dtype']}",
        ),
        ("reranker device / providers", f"{rr.get('device')} / {rr.get('providers')}"),
        (
            "min cosine, served vs float32 on CPU (64 abstracts)",
            f"{sv['min_cosine_vs_cpu_fp32']:.5f}",
        ),
        (
            "in-process, abstracts: texts/s (tokens/s)",
            f"{f0(ip['texts_per_s'])} ({f0(ip['tokens_per_s'])})",
        ),
        ("HTTP 64 clients x 16 abstracts: texts/s", f0(sv["c64_x16_long"]["texts_per_s"])),
        ("  vs in-process", f"{sv['c64_x16_long']['texts_per_s'] / ip['texts_per_s']:.2f}x"),
        ("HTTP 64 clients x 1 short text: requests/s", f0(sv["c64_x1_short"]["requests_per_s"])),
        ("  server CPU per request (ms)", f"{sv['c64_x1_short']['server_cpu_ms_per_request']:.2f}"),
        (
            "HTTP 1 client x 1 short text: p50 / p99 ms",
            f"{f1(sv['c1_x1_short']['p50_ms'])} / {f1(sv['c1_x1_short']['p99_ms'])}",
        ),
    ]
    if "rerank_c8_x100" in sv:
        r = sv["rerank_c8_x100"]
        rows.append(
            (
                "/rerank 8 clients x (1 query, 100 passages): requests/s, p50 ms",
                f"{f1(r['requests_per_s'])}, {f0(r['p50_ms'])}",
            )
        )
    errors = sum(sv[k]["errors"] for k in sv if isinstance(sv[k], dict) and "errors" in sv[k])
    rows.append(("HTTP errors", str(errors)))
    rows.append(("ml-api start (s) / RSS (MB)", f"{sv['start_s']:.1f} / {f0(sv['rss_mb'])}"))
    lines = [f"{result['machine']}; {result['date']}", "", "| | |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "eval" / "scifact")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--texts", type=int, default=4096, help="abstracts for the in-process run")
    p.add_argument("--seconds", type=float, default=20, help="per HTTP load")
    p.add_argument("--start-timeout", type=float, default=300)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    long, short = load_texts(args.data, args.texts)
    result: dict[str, Any] = {
        "machine": machine_line(machine_info(), args.device),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions(),
    }
    try:
        result["in_process"] = in_process(long, args.device)
        result["served"] = served(args, long, short)
    finally:
        stop_all_servers()
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2, default=str))
    print(report(result))
    sv = result["served"]
    providers = sv["health"]["embedder"]["providers"]
    ok = sv["min_cosine_vs_cpu_fp32"] >= MIN_COSINE and (
        args.device != "cuda" or providers[:1] == ["CUDAExecutionProvider"]
    )
    if not ok:
        print(f"FAILED: providers {providers}, cosine {sv['min_cosine_vs_cpu_fp32']:.5f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
