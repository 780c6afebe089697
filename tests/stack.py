"""Paths, model names and process helpers shared by the tests (import this by name; never
import `conftest`, which is ambiguous with several conftest.py files)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path

from ragctl import processes

ROOT = Path(__file__).resolve().parents[1]
# Names the session's test model store uses for each model.
TINY_EMBEDDER = "tiny-embedder"
TINY_RERANKER = "tiny-reranker"
MINILM = "minilm"
NO_RERANKER = "absent-reranker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop a server the way `ragctl` does: its process group and every descendant (BentoML's
    worker leaves the group), SIGKILL after `timeout` seconds."""
    if proc.poll() is None:
        processes.stop_tree([proc.pid], timeout=timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
