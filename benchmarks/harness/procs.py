"""Server processes for benchmarks: each in its own process group, started until a ready URL
answers, stopped with its whole process tree by ragctl's `stop_tree` (also on Ctrl-C, with
`stop_all_servers`), on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ragctl.processes import stop_tree

_SERVERS: list[Server] = []


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop a server as `ragctl` does (its process group and every descendant, SIGKILL after
    `timeout`), then kill whatever is left in its group (workers that outlived their parent)."""
    if proc.poll() is None:
        # BentoML's worker runs in a process group of its own: a killpg alone leaves it bound
        # to the port, so the tree is collected and signalled by ragctl's helper.
        stop_tree([proc.pid], timeout=timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own process group (stopped as a group, also on Ctrl-C)."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        port: int,
        ready_path: str,
    ) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0

    def start(self, timeout: float) -> None:
        import httpx

        t0 = time.perf_counter()
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _SERVERS.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    self.start_seconds = time.perf_counter() - t0
                    return
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def _tree(self) -> list[Any]:
        import psutil

        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def main_thread_cpu_seconds(self) -> float:
        """CPU of each process's main thread: in a BentoML worker that is the event loop (HTTP,
        validation, our middlewares), apart from ONNX Runtime's and the batcher's threads."""
        import psutil

        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                for t in p.threads():
                    if t.id == p.pid:
                        total += t.user_time + t.system_time
        return total

    def rss_mb(self) -> float:
        import psutil

        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None:
            return
        stop_group(self.proc, timeout)
        if self in _SERVERS:
            _SERVERS.remove(self)


def stop_all_servers() -> None:
    for server in list(_SERVERS):
        with contextlib.suppress(Exception):
            server.stop(timeout=10)
