"""`ragctl up` as a user runs it: it refuses ports that are taken, and a SIGKILLed `ragctl up`
leaves no service behind (PR_SET_PDEATHSIG, whole-tree stop)."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from stack import NO_RERANKER, ROOT, TINY_EMBEDDER, free_port, stop_process


def up_env(model_store: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BENTOML_HOME": str(model_store),
        "HF_HUB_OFFLINE": "1",
        "ML_API_EMBEDDER": TINY_EMBEDDER,
        "ML_API_RERANKER": NO_RERANKER,
        "BENTOML_DO_NOT_TRACK": "true",
    }


def up_cmd(data: Path, ml_port: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ragctl.main",
        "up",
        "--ml-port",
        str(ml_port),
        "--port",
        str(port),
        "--data",
        str(data),
        "--no-import-models",
    ]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "an old stack"}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def squatter() -> Iterator[int]:
    """A port something else already answers HTTP on."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("which", ["ml-api", "backend"])
def test_up_refuses_a_taken_port_naming_it(
    model_store: Path, tmp_path: Path, squatter: int, which: str
) -> None:
    ml_port, port = (squatter, free_port()) if which == "ml-api" else (free_port(), squatter)
    proc = subprocess.run(
        up_cmd(tmp_path / "data", ml_port, port),
        cwd=ROOT,
        env=up_env(model_store),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out
    assert f"Port {squatter} ({which})" in out and "already in use" in out
    assert "an old stack" in out  # what answers there
    assert "Ready" not in out
    # Nothing was started: the ml-api's log is empty or absent.
    log = tmp_path / "data" / "logs" / "ml-api.log"
    assert not log.exists() or log.stat().st_size == 0


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} after {timeout:.0f}s")


def test_sigkilled_up_leaves_no_children(model_store: Path, tmp_path: Path) -> None:
    ml_port, port = free_port(), free_port()
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(
            up_cmd(tmp_path / "data", ml_port, port),
            cwd=ROOT,
            env=up_env(model_store),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    children: list[psutil.Process] = []
    try:
        _wait(lambda: "Ready" in log.read_text(errors="replace"), 300, "not ready")
        children = psutil.Process(up.pid).children(recursive=True)
        cmdlines = [" ".join(p.cmdline()) for p in children]
        assert any("bentoml" in c for c in cmdlines), cmdlines
        assert any("uvicorn" in c for c in cmdlines), cmdlines
        # BentoML's worker puts itself in a process group of its own.
        assert any("_bentoml_impl.worker" in c for c in cmdlines), cmdlines
        up.send_signal(signal.SIGKILL)
        up.wait(10)

        def all_gone() -> bool:
            return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)

        _wait(all_gone, 90, f"children still running: {[p.pid for p in children]}")
        # Both ports are free again: a new `ragctl up` can start.
        from ragctl.processes import port_owner

        assert port_owner("127.0.0.1", ml_port) is None
        assert port_owner("127.0.0.1", port) is None
    finally:
        stop_process(up)  # type: ignore[arg-type]
        from ragctl.processes import stop_tree

        stop_tree([p.pid for p in children if p.is_running()])  # only if the test failed
