"""The contenders over HTTP: the ml-api (/embed, /rerank) and Infinity, under the load
generator of load.py."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.machine import loadavg
from benchmarks.harness.procs import Server, free_port
from benchmarks.harness.stack import EMBEDDER
from benchmarks.harness.throughput.common import (
    PASSAGES_PER_QUERY,
    ROOT,
    SETUP_INFINITY,
)
from benchmarks.harness.throughput.data import TextSet
from benchmarks.harness.throughput.inprocess_runs import InProcessRuns
from benchmarks.harness.throughput.load import Request, metrics_delta, run_load, scrape_metrics
from benchmarks.harness.throughput.results import Failure, Run
from benchmarks.harness.throughput.verify import Checked, min_cosine


class HttpRuns(InProcessRuns):
    """The benchmark plus its HTTP stages."""

    def embed_requests(
        self, ts: TextSet, batch: int, passes: int, encode: Callable[[list[str]], bytes]
    ) -> list[Request]:
        per_pass = []
        for start in range(0, len(ts.texts), batch):
            items = list(range(start, min(start + batch, len(ts.texts))))
            texts = [ts.texts[i] for i in items]
            per_pass.append(
                Request(encode(texts), items, len(items), sum(ts.tokens[i] for i in items))
            )
        return per_pass * passes

    def passes_for(self, ts: TextSet, concurrency: int, batch: int) -> int:
        per_pass = math.ceil(len(ts.texts) / batch)
        want = math.ceil(1.5 * concurrency / per_pass) if concurrency > 1 else 1
        return max(1, min(self.plan.max_passes, want))

    def http_embed_suite(
        self,
        contender: str,
        server: Server,
        path: str,
        encode: Callable[[list[str]], bytes],
        decode: Callable[[bytes], np.ndarray],
    ) -> None:
        """Throughput view (client batch texts per request) on every set, latency view (one
        short text per request), at each concurrency."""
        import orjson

        batch = self.args.client_batch
        url = server.url + path
        plan = self.plan

        def checker(ref: np.ndarray) -> Callable[[bytes, Request], Checked]:
            def check(body: bytes, req: Request) -> Checked:
                try:
                    vecs = decode(body)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    return Checked(False, f"bad body: {exc}: {body[:200]!r}")
                if vecs.shape[0] != len(req.items):
                    return Checked(False, f"{vecs.shape[0]} vectors for {len(req.items)} texts")
                return Checked(True, min_cos=min_cosine(vecs, ref[req.items]))

            return check

        jobs: list[tuple[str, TextSet, int, int]] = []  # (view, set, concurrency, batch)
        for c in plan.concurrencies:
            jobs.append(("throughput", self.sets["mixed"], c, batch))
        for name in ("long", "short"):
            jobs.append(("throughput", self.sets[name], plan.side_concurrency, batch))
        for c in plan.concurrencies:
            jobs.append(("latency", self.sets["short"], c, 1))

        # Warm-up, untimed: a few requests of each shape (client batch, one short text).
        for ts, b in ((self.sets["mixed"], batch), (self.sets["short"], 1)):
            warm = self.embed_requests(ts, b, 1, encode)[:8]
            wres = asyncio.run(run_load(url, warm, 4, checker(self.ref[ts.name])))
            if wres.errors:
                self.log(f"[yellow]{contender} warm-up errors: {wres.error_samples}[/yellow]")
        self.refresh_probe()

        for view, ts, c, b in jobs:
            if view == "latency":
                n = plan.latency_requests
                reqs = self.embed_requests(ts, 1, 1, encode)
                reqs = [reqs[i % len(reqs)] for i in range(n)]
            else:
                reqs = self.embed_requests(ts, b, self.passes_for(ts, c, b), encode)
            task = self.progress.add_task(f"{contender}: {ts.name} c={c} x{b}", total=len(reqs))
            cpu0 = server.cpu_seconds()
            m0 = scrape_metrics(server.url) if contender == "ml-api" else {}
            res = asyncio.run(
                run_load(
                    url,
                    reqs,
                    c,
                    checker(self.ref[ts.name]),
                    on_done=lambda t=task: self.progress.advance(t),
                )
            )
            server_cpu = server.cpu_seconds() - cpu0
            m1 = scrape_metrics(server.url) if contender == "ml-api" else {}
            extra: dict[str, Any] = {
                "view": view,
                "requests": len(reqs),
                "passes": len(reqs) // max(1, math.ceil(len(ts.texts) / b))
                if view == "throughput"
                else None,
                "server_cpu_pct": 100 * server_cpu / res.seconds,
                "client_cpu_pct": 100 * res.client_cpu_s / res.seconds,
                "server_rss_mb": server.rss_mb(),
            }
            for h, values in res.headers.items():
                if values:
                    extra[f"mean_{h}"] = float(np.mean(values))
            if res.latencies_ms:
                extra["mean_latency_ms"] = float(np.mean(res.latencies_ms))
            if m0 or m1:
                extra |= metrics_delta(m0, m1, "embed")
            self.add(
                Run(
                    contender,
                    ts.name if view == "throughput" else "one short text",
                    f"c={c} x{b}",
                    res.texts,
                    res.tokens,
                    res.seconds,
                    cpu_s=server_cpu,
                    concurrency=c,
                    client_batch=b,
                    latencies_ms=res.latencies_ms,
                    errors=res.errors,
                    error_samples=res.error_samples,
                    min_cos=res.min_cos,
                    extra=extra,
                )
            )
            self.progress.update(task, visible=False)

    def http_rerank_suite(self, kind: str, backend: str, server: Server) -> None:
        import orjson

        reqs_src = self.rerank_requests(kind)
        flag = self.flag_scores.get(kind, {})
        url = server.url + "/rerank"

        def check(body: bytes, req: Request) -> Checked:
            try:
                hits = orjson.loads(body)
                scores = np.zeros(len(hits))
                for h in hits:
                    scores[h["index"]] = h["score"]
            except (orjson.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
                return Checked(False, f"bad body: {exc}: {body[:200]!r}")
            if len(hits) != PASSAGES_PER_QUERY:
                return Checked(False, f"{len(hits)} scores for {PASSAGES_PER_QUERY} passages")
            ref = flag.get(req.items[0])
            max_abs = float(np.max(np.abs(scores - np.asarray(ref)))) if ref else None
            return Checked(True, max_abs=max_abs)

        reqs = [
            Request(
                orjson.dumps({"query": q, "texts": p, "raw_scores": True}),
                [i],
                PASSAGES_PER_QUERY,
                0,
            )
            for i, (q, p) in enumerate(reqs_src)
        ]
        asyncio.run(run_load(url, reqs[:1], 1, check))  # warm-up
        self.refresh_probe()
        for c in self.plan.rerank_concurrency[kind]:
            task = self.progress.add_task(
                f"ml-api /rerank {kind} ({backend}): c={c}", total=len(reqs)
            )
            m0 = scrape_metrics(server.url)
            cpu0 = server.cpu_seconds()
            res = asyncio.run(
                run_load(url, reqs, c, check, on_done=lambda t=task: self.progress.advance(t))
            )
            server_cpu = server.cpu_seconds() - cpu0
            extra: dict[str, Any] = {
                "max_abs_logit_diff_vs_flag": res.max_abs,
                "server_cpu_pct": 100 * server_cpu / res.seconds,
            }
            for h, values in res.headers.items():
                if values:
                    extra[f"mean_{h}"] = float(np.mean(values))
            extra |= metrics_delta(m0, scrape_metrics(server.url), "rerank")
            self.add(
                Run(
                    f"ml-api /rerank ({backend})",
                    f"rerank {kind}",
                    f"c={c}",
                    res.texts,
                    0,
                    res.seconds,
                    cpu_s=server_cpu,
                    concurrency=c,
                    latencies_ms=res.latencies_ms,
                    errors=res.errors,
                    error_samples=res.error_samples,
                    extra=extra,
                )
            )
            self.progress.update(task, visible=False)

    def ml_api_server(self, reranker: str, backend: str, work: Path) -> Server:
        port = free_port()
        env = {
            **os.environ,
            "BENTOML_HOME": str(self.home),
            "HF_HUB_OFFLINE": "1",
            "ML_API_EMBEDDER": EMBEDDER,
            "ML_API_RERANKER": reranker,
            "ML_API_RERANKER_BACKEND": backend,
            "ML_API_DEVICE": self.device,
            "BENTOML_DO_NOT_TRACK": "true",
        }
        cmd = [sys.executable, "-m", "bentoml", "serve", "service:MLService"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        return Server(
            "ml-api",
            cmd,
            env=env,
            cwd=ROOT,
            log_path=work / f"ml-api-{reranker}-{backend}-{port}.log",
            port=port,
            ready_path="/readyz",
        )

    def ml_api(self, work: Path) -> None:
        """Embeddings once (with the default reranker backend loaded beside), then /rerank per
        cross-encoder and reranker backend (one server each: the backend is a start setting)."""
        import orjson

        self.section_load["ml-api"] = loadavg()

        def encode(texts: list[str]) -> bytes:
            return orjson.dumps({"inputs": texts, "normalize": True, "truncate": True})

        def decode(body: bytes) -> np.ndarray:
            return np.asarray(orjson.loads(body), dtype=np.float32)

        configs = [
            (kind, backend) for backend in self.args.rerank_backends for kind in self.rerankers
        ]
        first = True
        for kind, backend in configs:
            model = self.rerankers[kind].name
            task = self.progress.add_task(
                f"ml-api: starting ({kind} reranker, {backend})", total=None
            )
            server = self.ml_api_server(model, backend, work)
            try:
                server.start(timeout=300)
            except (RuntimeError, TimeoutError) as exc:
                self.failures.append(Failure(f"ml-api ({kind}, {backend})", str(exc)[-1500:]))
                self.progress.update(task, visible=False)
                continue
            self.progress.update(task, visible=False)
            self.notes.append(
                f"ml-api ({kind} reranker, {backend}) start to /readyz: "
                f"{server.start_seconds:.1f} s"
            )
            try:
                if first:
                    self.http_embed_suite("ml-api", server, "/embed", encode, decode)
                    first = False
                self.http_rerank_suite(kind, backend, server)
            finally:
                server.stop()

    # -- Infinity --------------------------------------------------------------------------

    def infinity(self, work: Path) -> None:
        import orjson

        self.section_load["infinity"] = loadavg()
        venv = Path(self.args.infinity_venv)
        exe = venv / "bin" / "infinity_emb"
        if not exe.exists():
            task = self.progress.add_task("Infinity: installing (setup_infinity.sh)", total=None)
            proc = subprocess.run(
                ["bash", str(SETUP_INFINITY), str(venv)],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            self.progress.update(task, visible=False)
            if proc.returncode != 0 or not exe.exists():
                reason = (proc.stdout + proc.stderr)[-1500:]
                for name in ("Infinity torch", "Infinity optimum"):
                    self.failures.append(Failure(name, f"install failed: {reason}"))
                return

        # The optimum engine's copy of the model folder, with the three fixes.
        onnx_dir = work / "infinity-minilm-onnx"
        if onnx_dir.exists():
            shutil.rmtree(onnx_dir)
        shutil.copytree(self.minilm, onnx_dir)
        shutil.copy2(self.emb.path / "model.onnx", onnx_dir / "model.onnx")
        cfg_path = onnx_dir / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["max_position_embeddings"] = int(self.emb.meta["max_length"])
        cfg_path.write_text(json.dumps(cfg, indent=2))

        hf_home = work / "infinity-hf"
        hf_home.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DO_NOT_TRACK": "1",
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            "HF_HOME": str(hf_home),
        }
        for var in ("VIRTUAL_ENV", "PYTHONPATH", "BENTOML_HOME"):
            env.pop(var, None)
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"

        def encode(texts: list[str]) -> bytes:
            return orjson.dumps({"model": "minilm", "input": texts})

        def decode(body: bytes) -> np.ndarray:
            data = sorted(orjson.loads(body)["data"], key=lambda d: d["index"])
            return np.asarray([d["embedding"] for d in data], dtype=np.float32)

        engines = [
            ("Infinity torch", ["--model-id", str(self.minilm), "--engine", "torch"], ROOT),
            (
                "Infinity optimum",
                ["--model-id", ".", "--engine", "optimum", "--pooling-method", "mean"],
                onnx_dir,
            ),
        ]
        for name, extra_args, cwd in engines:
            port = free_port()
            cmd = [str(exe), "v2", *extra_args, "--served-model-name", "minilm"]
            cmd += ["--batch-size", "32", "--device", self.device, "--host", "127.0.0.1"]
            cmd += ["--port", str(port)]
            server = Server(
                name,
                cmd,
                env=env,
                cwd=cwd,
                log_path=work / f"{name.replace(' ', '-')}-{port}.log",
                port=port,
                ready_path="/health",
            )
            task = self.progress.add_task(f"{name}: starting", total=None)
            try:
                server.start(timeout=300)
            except (RuntimeError, TimeoutError, OSError) as exc:
                self.failures.append(Failure(name, str(exc)[-1500:]))
                self.progress.update(task, visible=False)
                continue
            self.progress.update(task, visible=False)
            self.notes.append(
                f"{name} start to /health: {server.start_seconds:.1f} s; "
                f"command: `{shlex.join(cmd[1:])}` (cwd {cwd.name})"
            )
            try:
                self.http_embed_suite(name, server, "/embeddings", encode, decode)
            except Exception as exc:  # recorded; the rest still runs
                self.failures.append(Failure(name, f"{type(exc).__name__}: {exc}"))
            finally:
                server.stop()
