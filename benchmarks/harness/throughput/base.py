"""The benchmark's state: the plan, the runs, the load probes, the store and the texts."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from benchmarks.harness.machine import loadavg, machine_info
from benchmarks.harness.report import pct

# one model name with harness/stack.py: the ingest stage reuses the store filled here
from benchmarks.harness.stack import EMBEDDER
from benchmarks.harness.throughput.common import (
    MID_RR,
    ROOT,
    TINY_RR,
    console,
)
from benchmarks.harness.throughput.data import load_texts
from benchmarks.harness.throughput.plan import FULL, QUICK
from benchmarks.harness.throughput.reference import OrtReference
from benchmarks.harness.throughput.results import Failure, Run
from benchmarks.harness.throughput.store import (
    make_mid_cross_encoder,
    resolve_device,
    stored,
)

# -- the benchmark -----------------------------------------------------------------------------


class BenchBase:
    """What every stage shares: arguments, runs, probes, the store and the texts."""

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
