"""The in-process contenders: ORT batch-size sweep, OnnxEmbedder, sentence-transformers,
FlagReranker."""

from __future__ import annotations

import gc
import random
import time

import numpy as np

from benchmarks.harness.machine import loadavg
from benchmarks.harness.stack import EMBEDDER
from benchmarks.harness.throughput.base import BenchBase
from benchmarks.harness.throughput.common import PASSAGES_PER_QUERY
from benchmarks.harness.throughput.results import Failure, Run
from benchmarks.harness.throughput.verify import min_cosine


class InProcessRuns(BenchBase):
    """The benchmark plus its in-process stages."""

    def inprocess_embeddings(self) -> None:
        self.section_load["in-process"] = loadavg()
        ort = self.ort
        mixed = self.sets["mixed"]
        sweep = self.plan.sweep + ((256, 512) if self.gpu else ())
        task = self.progress.add_task("in-process ORT", total=len(sweep) + 3)
        ort.encode(mixed.texts[:64], 32)  # warm-up: arenas, kernels
        self.probe_texts = mixed.texts[: self.plan.probe_texts]
        self.refresh_probe()
        best: Run | None = None
        for bs in sweep:
            self.progress.update(task, description=f"in-process ORT: batch size {bs}")
            ort.padded_tokens = 0
            t0, c0 = time.perf_counter(), time.process_time()
            vecs = ort.encode(mixed.texts, bs)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            run = self.add(
                Run(
                    "in-process ORT",
                    "mixed",
                    f"bs {bs}",
                    len(mixed.texts),
                    mixed.n_tokens,
                    secs,
                    cpu_s=cpu,
                    extra={"batch_size": bs, "padding_eff": mixed.n_tokens / ort.padded_tokens},
                )
            )
            if best is None or (self.adjusted(run) or 0) > (self.adjusted(best) or 0):
                best, self.ref["mixed"] = run, vecs
            self.progress.advance(task)
        assert best is not None
        self.best_bs = int(best.extra["batch_size"])
        best.extra["best"] = True
        for name in ("long", "short"):
            ts = self.sets[name]
            self.progress.update(task, description=f"in-process ORT: {name}, bs {self.best_bs}")
            ort.padded_tokens = 0
            t0, c0 = time.perf_counter(), time.process_time()
            self.ref[name] = ort.encode(ts.texts, self.best_bs)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            self.add(
                Run(
                    "in-process ORT",
                    name,
                    f"bs {self.best_bs}",
                    len(ts.texts),
                    ts.n_tokens,
                    secs,
                    cpu_s=cpu,
                    extra={
                        "batch_size": self.best_bs,
                        "best": True,
                        "padding_eff": ts.n_tokens / ort.padded_tokens,
                    },
                )
            )
            self.progress.advance(task)

        # One short text at a time: the in-process floor for the latency target.
        self.progress.update(task, description="in-process ORT: one short text per call")
        short = self.sets["short"].texts
        calls = [short[i % len(short)] for i in range(self.plan.inproc_latency_calls)]
        for t in calls[:10]:
            ort.encode([t], 1)
        lat = []
        t_all = time.perf_counter()
        for t in calls:
            t0 = time.perf_counter()
            ort.encode([t], 1)
            lat.append((time.perf_counter() - t0) * 1000)
        secs = time.perf_counter() - t_all
        toks = sum(len(x) for x in ort.tokenize(calls))
        self.add(
            Run(
                "in-process ORT",
                "one short text",
                "1 text/call",
                len(calls),
                toks,
                secs,
                concurrency=1,
                client_batch=1,
                latencies_ms=lat,
            )
        )
        self.progress.advance(task)
        self.progress.update(task, description="in-process ORT: done")

    def inprocess_runtime(self) -> None:
        """Our own runtime (OnnxEmbedder: tokenize, then forward on the sub-batches the
        ml-api's batcher plans), in-process. The row keeps its name `OnnxEmbedder.embed()`
        for comparison with earlier reports."""
        from benchmarks.harness import inprocess
        from models.runtime.embedder import load_embedder
        from models.runtime.settings import MLSettings

        task = self.progress.add_task("OnnxEmbedder.embed()", total=1)
        try:
            settings = MLSettings(
                embedder=EMBEDDER, device=self.device, intra_op_threads=self.threads
            )
            emb = load_embedder(settings, gpu=self.gpu)
        except Exception as exc:  # recorded; the rest still runs
            self.failures.append(Failure("OnnxEmbedder in-process", f"{type(exc).__name__}: {exc}"))
            return
        mixed = self.sets["mixed"]
        inprocess.embed(emb, mixed.texts[:64], settings)
        self.refresh_probe()
        t0, c0 = time.perf_counter(), time.process_time()
        vecs = inprocess.embed(emb, mixed.texts, settings)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.add(
            Run(
                "OnnxEmbedder.embed() in-process",
                "mixed",
                f"token budget {settings.batch_token_budget(self.gpu)}",
                len(mixed.texts),
                mixed.n_tokens,
                secs,
                cpu_s=cpu,
                min_cos=min_cosine(vecs, self.ref["mixed"]),
            )
        )
        self.progress.advance(task)
        del emb
        gc.collect()

    def sentence_transformers(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(self.threads)
        task = self.progress.add_task("sentence-transformers", total=3)
        model = SentenceTransformer(str(self.minilm), device=self.device)
        model.encode(self.sets["mixed"].texts[:64], batch_size=32)
        self.refresh_probe()
        for name in ("mixed", "long", "short"):
            ts = self.sets[name]
            self.progress.update(task, description=f"sentence-transformers: {name}")
            t0, c0 = time.perf_counter(), time.process_time()
            vecs = model.encode(
                ts.texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True
            )
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            self.add(
                Run(
                    "sentence-transformers",
                    name,
                    "bs 32",
                    len(ts.texts),
                    ts.n_tokens,
                    secs,
                    cpu_s=cpu,
                    min_cos=min_cosine(np.asarray(vecs), self.ref[name]),
                )
            )
            self.progress.advance(task)
        del model
        gc.collect()

    def rerank_requests(self, kind: str) -> list[tuple[str, list[str]]]:
        """(query, 100 passages) per request: deterministic, the same for every contender."""
        n = self.plan.rerank_requests[kind]
        out = []
        for i in range(n):
            rng = random.Random(1000 + i)
            passages = rng.sample(self.corpus, PASSAGES_PER_QUERY)
            out.append((self.queries[(i * 37) % len(self.queries)], passages))
        return out

    def flag_rerank(self) -> None:
        import torch
        from FlagEmbedding import FlagReranker

        torch.set_num_threads(self.threads)
        task = self.progress.add_task("FlagReranker in-process", total=len(self.rerankers))
        for kind, model in self.rerankers.items():
            self.progress.update(task, description=f"FlagReranker in-process: {kind}")
            max_len = int(model.meta["max_length"])
            # On a GPU as FlagEmbedding's README writes it (fp16); on CPU fp16 does not apply.
            rr = FlagReranker(
                str(model.path),
                use_fp16=self.gpu,
                devices="cuda:0" if self.gpu else "cpu",
                max_length=max_len,
            )
            reqs = self.rerank_requests(kind)
            rr.compute_score([(reqs[0][0], p) for p in reqs[0][1][:16]])  # warm-up
            self.refresh_probe()
            lat = []
            scores: dict[int, list[float]] = {}
            t_all, c0 = time.perf_counter(), time.process_time()
            for i, (q, passages) in enumerate(reqs):
                t0 = time.perf_counter()
                s = rr.compute_score([(q, p) for p in passages])
                lat.append((time.perf_counter() - t0) * 1000)
                scores[i] = [float(x) for x in s]
            secs, cpu = time.perf_counter() - t_all, time.process_time() - c0
            self.flag_scores[kind] = scores
            self.add(
                Run(
                    "FlagReranker in-process",
                    f"rerank {kind}",
                    "compute_score, default bs",
                    len(reqs) * PASSAGES_PER_QUERY,
                    0,
                    secs,
                    cpu_s=cpu,
                    concurrency=1,
                    latencies_ms=lat,
                    extra={"max_length": max_len},
                )
            )
            self.progress.advance(task)
            del rr
            gc.collect()

    # -- HTTP ------------------------------------------------------------------------------
