"""Regression: under uvloop, spawning a process (a fork) while another thread is inside a
multi-threaded OpenBLAS gemv hangs that gemv for good. The backend spawns a parser process per
PDF/DOCX/HTML document while embedded Qdrant computes distances with numpy in a worker thread;
the soak benchmark hung the backend this way. Importing `backend` first must prevent it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from stack import ROOT

PROBE = """
import asyncio, sys, threading, time
if sys.argv[1] == "backend":
    import backend  # noqa: F401  (must come before numpy)
import numpy as np
import uvloop

vectors = np.random.rand(3000, 384).astype(np.float32)
query = np.random.rand(384).astype(np.float32)
done = 0

def gemv() -> None:
    global done
    while True:
        np.dot(vectors, query)
        done += 1

async def main() -> None:
    threading.Thread(target=gemv, daemon=True).start()
    last, moved, end = -1, time.monotonic(), time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        proc = await asyncio.create_subprocess_exec("/bin/true")
        await proc.wait()
        if done != last:
            last, moved = done, time.monotonic()
        elif time.monotonic() - moved > 3:
            print("HANG", flush=True)
            return
    print("OK", flush=True)

uvloop.run(main())
"""


def probe(mode: str, seconds: float) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(seconds)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    return proc.stdout.strip() or proc.stderr[-2000:]


def test_backend_import_keeps_blas_safe_across_forks() -> None:
    control = probe("plain", 10)
    if control != "HANG":
        pytest.skip(f"this machine's BLAS does not hang without the fix ({control!r})")
    assert probe("backend", 10) == "OK"
