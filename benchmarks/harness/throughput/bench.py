"""The whole throughput run in order (in-process, ml-api, Infinity, ingest) and `--only short1`."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.machine import loadavg, machine_line
from benchmarks.harness.report import pct
from benchmarks.harness.throughput.common import TINY_RR
from benchmarks.harness.throughput.http_runs import HttpRuns
from benchmarks.harness.throughput.load import Request, metrics_delta, run_load, scrape_metrics
from benchmarks.harness.throughput.results import Failure
from benchmarks.harness.throughput.verify import Checked, min_cosine


class Bench(HttpRuns):
    """Every stage, run in order by `run`."""

    # -- run -------------------------------------------------------------------------------

    def ingest(self, work: Path) -> None:
        """SciFact through the backend against embedding the same chunks alone (ingest.py)."""
        from benchmarks.harness.beir import load_beir
        from benchmarks.harness.ingest_run import run_ingest, subset

        self.section_load["ingest"] = loadavg()
        data = subset(load_beir(self.args.data, "train"), self.plan.ingest_docs)
        (work / "ingest").mkdir()
        self.ingest_result = run_ingest(data, self.home, work / "ingest")
        self.log(self.ingest_result.summary())

    def short1(self, work: Path) -> dict[str, Any]:
        """`--only short1` (issue 13 item 3): in-process ORT on the short set at batch size 8
        (the reference of "One short text per request"), then the ml-api at 64 clients x 1 short
        text, driven once by an aiohttp and once by an httpx load generator (they share the
        cores with the server: the cheaper client shows more of the server's capacity), each
        with server CPU per request outside the model (process-tree CPU minus the batcher's
        forward-pass seconds from /metrics: ONNX Runtime's other intra-op threads count as
        outside), the event loop's own CPU per request (the worker's main thread: HTTP,
        validation, middlewares) and the load generator's CPU."""
        import orjson

        ts = self.sets["short"]
        self.ort.encode(ts.texts[:64], 8)  # warm-up
        t0 = time.perf_counter()
        self.ref["short"] = self.ort.encode(ts.texts, 8)
        inproc = len(ts.texts) / (time.perf_counter() - t0)
        server = self.ml_api_server(TINY_RR, "flag", work)
        server.start(timeout=300)
        out: dict[str, Any] = {"inproc_texts_per_s": round(inproc, 1)}
        try:
            url = server.url + "/embed"

            def encode(texts: list[str]) -> bytes:
                return orjson.dumps({"inputs": texts, "normalize": True, "truncate": True})

            ref = self.ref["short"]

            def check(body: bytes, req: Request) -> Checked:
                vecs = np.asarray(orjson.loads(body), dtype=np.float32)
                return Checked(True, min_cos=min_cosine(vecs, ref[req.items]))

            reqs = self.embed_requests(ts, 1, 1, encode)
            n = int(os.environ.get("SHORT1_REQUESTS", "1500"))
            reqs = [reqs[i % len(reqs)] for i in range(n)]
            for client in ("aiohttp", "httpx"):
                asyncio.run(run_load(url, reqs[:64], 8, check, client=client))  # warm-up
                cpu0, m0 = server.cpu_seconds(), scrape_metrics(server.url)
                loop0 = server.main_thread_cpu_seconds()
                res = asyncio.run(run_load(url, reqs, 64, check, client=client))
                cpu = server.cpu_seconds() - cpu0
                loop_cpu = server.main_thread_cpu_seconds() - loop0
                m = metrics_delta(m0, scrape_metrics(server.url), "embed")
                out[client] = short1_figures(res, inproc, cpu, loop_cpu, m)
        finally:
            server.stop()
        return out

    def run(self) -> None:
        with tempfile.TemporaryDirectory(prefix="ragstack-throughput-") as tmp:
            work = Path(tmp)
            if self.args.only == "short1":
                with self.progress:
                    self.prepare(work)
                    self.load_data()
                out = self.short1(work)
                out["machine"] = machine_line(self.machine, self.device)
                out["date"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
                print(json.dumps(out, indent=2, default=str))
                return
            with self.progress:
                self.prepare(work)
                self.load_data()
                self.inprocess_embeddings()
                self.inprocess_runtime()
                self.sentence_transformers()
                self.flag_rerank()
                gc.collect()
                self.ml_api(work)
                if not self.args.no_infinity:
                    self.infinity(work)
                else:
                    self.failures.append(Failure("Infinity", "skipped (--no-infinity)"))
                if not self.args.no_ingest:
                    self.ingest(work)
            self.logs = {p.name: p.read_text(errors="replace")[-4000:] for p in work.glob("*.log")}
        self.finished = dt.datetime.now().astimezone()
        self.load_end = loadavg()


def short1_figures(
    res: Any, inproc: float, cpu: float, loop_cpu: float, m: dict[str, float]
) -> dict[str, Any]:
    """One short1 load run against the in-process reference, per request where it says so."""
    done = len(res.latencies_ms)
    fwd = m.get("forward_s", 0.0)
    return {
        "ml_api_texts_per_s": round(res.texts / res.seconds, 1),
        "ratio": round(res.texts / res.seconds / inproc, 3),
        "p50_ms": pct(res.latencies_ms, 50),
        "p95_ms": pct(res.latencies_ms, 95),
        "requests": done,
        "errors": res.errors,
        "min_cos": res.min_cos,
        "server_cpu_ms_per_req": round(1000 * cpu / max(1, done), 3),
        "forward_ms_per_req": round(1000 * fwd / max(1, done), 3),
        "server_cpu_outside_model_ms_per_req": round(1000 * (cpu - fwd) / max(1, done), 3),
        "event_loop_cpu_ms_per_req": round(1000 * loop_cpu / max(1, done), 3),
        "client_cpu_ms_per_req": round(1000 * res.client_cpu_s / max(1, done), 3),
        "forward_passes": m.get("forward_passes"),
        "items_per_pass": m.get("items_per_pass"),
        "seconds": round(res.seconds, 2),
    }
