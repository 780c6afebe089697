"""The throughput report: tables, targets and notes from the runs, as rich tables and Markdown."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import numpy as np
from rich.table import Table

from benchmarks.harness.ingest_run import TARGET as INGEST_TARGET
from benchmarks.harness.machine import machine_line, versions
from benchmarks.harness.report import Section, f0, f1, pct, ratio, section_markdown
from benchmarks.harness.throughput.bench import Bench
from benchmarks.harness.throughput.common import PASSAGES_PER_QUERY, console
from benchmarks.harness.throughput.results import Run

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
                f"≤ {INGEST_TARGET}x",
                ing.ratio <= INGEST_TARGET and ing.ok,
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
        rows.append(
            target(
                "ingest through the backend", "skipped (--no-ingest)", f"≤ {INGEST_TARGET}x", None
            )
        )
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
    title = "## Throughput run" + (" (--quick smoke run)" if quick else "")
    lines = [title, ""]
    lines += [f"- {h}" for h in header]
    for s in sections:
        lines += section_markdown(s, ["---" if i < 3 else "---:" for i in range(len(s.columns))])
    return "\n".join(lines) + "\n"
