"""Child processes that never outlive `ragctl up`, and ports that are checked before use.

Why each piece exists:
- `port_owner`: a stack left running on the ports made a new `ragctl up` report "Ready" against
  the old backend; we refuse to start instead, naming the port and what answers there.
- `start`: children get PR_SET_PDEATHSIG (Linux), so a SIGKILLed `ragctl up` takes its
  services down with it instead of leaving them holding the ports.
- `stop_tree`: BentoML's `_bentoml_impl.worker` runs in a process group of its own, so killing
  the `bentoml serve` group leaves it bound to the port; we collect the whole tree first and
  escalate to every process in it.
- `PidFile`: what a previous `ragctl up` started, so a later one can clean up leftovers (e.g.
  after a power cut of the terminal that PDEATHSIG did not cover) before it starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before prctl took effect.
    if os.getppid() == 1:
        os._exit(1)


def start(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own session (a signal to us must not reach it twice), logging to
    `log`, set to receive SIGTERM if this process dies (Linux)."""
    preexec: Callable[[], None] | None = _die_with_parent if sys.platform == "linux" else None
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,  # only prctl and getppid: nothing that could deadlock
        )


def tree(pid: int) -> list[psutil.Process]:
    """`pid` and all its descendants (whatever process group they put themselves in)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_tree(pids: list[int], timeout: float = 20) -> None:
    """SIGTERM each tree's process group and every process in it; SIGKILL what is left after
    `timeout` seconds (descendants that appeared meanwhile included)."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        procs.update({p.pid: p for p in tree(pid)})
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    psutil.wait_procs(list(procs.values()), timeout=timeout)
    for pid in pids:  # children born during shutdown
        procs.update({p.pid: p for p in tree(pid)})
    leftovers = [p for p in procs.values() if p.is_running()]
    for p in leftovers:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(leftovers, timeout=10)


def port_owner(host: str, port: int) -> str | None:
    """None when `host:port` is free, else what holds it (process and what it answers)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return None
        except OSError:
            pass
    parts = []
    owner = _listener(port)
    if owner is not None:
        with contextlib.suppress(psutil.Error):
            parts.append(f"pid {owner.pid} ({' '.join(owner.cmdline())[:120]})")
    parts.append(_answer(host, port))
    return "; ".join(parts)


def _listener(port: int) -> psutil.Process | None:
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            with contextlib.suppress(psutil.Error):
                return psutil.Process(c.pid)
    return None


def _answer(host: str, port: int) -> str:
    url = f"http://{host}:{port}/health"
    try:
        r = httpx.get(url, timeout=2)
    except httpx.HTTPError as exc:
        return f"{url} does not answer HTTP ({type(exc).__name__})"
    return f"{url} answers HTTP {r.status_code}: {r.text[:160]!r}"


class PidFile:
    """The process trees a `ragctl up` started, in its data folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, pids: list[int]) -> None:
        entries = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                entries.append({"pid": pid, "create_time": psutil.Process(pid).create_time()})
        self.path.write_text(json.dumps({"owner": os.getpid(), "children": entries}))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def stale(self) -> list[int]:
        """Children of an earlier `ragctl up` that is gone but whose children still run."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        if psutil.pid_exists(int(data.get("owner", 0))):
            return []  # that `ragctl up` is still running: not ours to stop
        found = []
        for e in data.get("children", []):
            with contextlib.suppress(psutil.Error, KeyError, TypeError):
                p = psutil.Process(int(e["pid"]))
                # Same process, not a new one that reused the pid.
                if abs(p.create_time() - float(e["create_time"])) < 0.01:
                    found.append(p.pid)
        return found
