"""Names every part of the soak uses: where results go, the default data, the model names, the
console."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[3]

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "scifact"
EMBEDDER = "soak-minilm"
RERANKER = "soak-tiny-reranker"
PARSER_MARK = "backend.ingest.isolate"  # cmdline of the backend's per-document parser processes
FINAL = ("indexed", "failed")
# Thread-pool settings of native libraries: they change how the services behave, so a run
# that sets them says so.
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MIME = {
    "txt": "text/plain",
    "md": "text/markdown",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}

# Wide enough for the tables when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 180)
