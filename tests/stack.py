"""Paths, model names and process helpers shared by the tests (import this by name; never
import `conftest`, which is ambiguous with several conftest.py files)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

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
    """SIGTERM the whole process group (servers have worker children), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
