"""Names every part of the throughput benchmark uses: paths, model names, the console."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[3]
RESULTS = ROOT / "benchmarks" / "results"
_SHARED_DATA = ROOT.parent / "shared" / "eval" / "scifact"
DEFAULT_DATA = _SHARED_DATA if _SHARED_DATA.is_dir() else Path("/work/shared/eval/scifact")
DEFAULT_INFINITY_VENV = Path(os.environ.get("INFINITY_VENV", "/tmp/infinity-venv"))
SETUP_INFINITY = ROOT / "benchmarks" / "peers" / "setup_infinity.sh"

TINY_RR = "bench-tiny-reranker"
MID_RR = "bench-mid-reranker"
PASSAGES_PER_QUERY = 100

# Wide enough for the tables when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 180)
