"""Starting the ml-api (all-MiniLM-L6-v2 in a temporary BentoML store) and a fresh backend on free
ports, for the benchmarks that measure the two together (ingest, interactive, throughput)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console

from benchmarks.harness.procs import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
EMBEDDER = "bench-minilm"  # throughput.py imports it under this name too, so stores are shared
SERVE = [sys.executable, "-m"]
console = Console()  # one console for ingest.py's logs, status and tables


def import_minilm(home: Path, root: Path = ROOT) -> None:
    """MiniLM into the store at `home`; `root` is the source tree whose tests/modelfactory.py
    finds the model (interactive.py --src points it at another checkout)."""
    os.environ["BENTOML_HOME"] = str(home)
    sys.path.insert(0, str(root / "tests"))
    import modelfactory

    from models.build import importer

    with console.status("importing all-MiniLM-L6-v2 into the model store"):
        importer.import_embedder(str(modelfactory.minilm_dir()), EMBEDDER)


def start_services(work: Path, home: Path, root: Path = ROOT) -> tuple[Server, Server]:
    """ml-api then backend, each run from the source tree `root` (a before/after comparison
    runs another checkout with the same harness)."""
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "BENTOML_DO_NOT_TRACK": "true"}
    ml_port = free_port()
    ml = Server(
        "ml-api",
        [*SERVE, "bentoml", "serve", "service:MLService", "--port", str(ml_port)],
        env={**base, "BENTOML_HOME": str(home), "ML_API_EMBEDDER": EMBEDDER},
        cwd=root,
        log_path=work / "ml-api.log",
        port=ml_port,
        ready_path="/readyz",
    )
    ml.start(timeout=180)
    be_port = free_port()
    backend = Server(
        "backend",
        [*SERVE, "uvicorn", "backend.app:app", "--no-access-log", "--port", str(be_port)],
        env={**base, "DATA_DIR": str(work / "data"), "ML_API_URL": ml.url, "LOG_LEVEL": "WARNING"},
        cwd=root,
        log_path=work / "backend.log",
        port=be_port,
        ready_path="/health",
    )
    backend.start(timeout=120)
    return ml, backend
