"""`ragctl up`: the whole stack on one machine — ml-api, backend, embedded Qdrant."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer
from rich.console import Console

from models.runtime.settings import ML_API_PORT
from ragctl import processes
from ragctl.client import BACKEND_PORT

ROOT = Path(__file__).resolve().parents[1]  # service.py and backend/ live here
console = Console(stderr=True)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            console.print(f"[red]exited with {proc.returncode}; last log lines of {log}:[/red]")
            console.print(log.read_text(errors="replace")[-3000:], markup=False)
            return False
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    console.print(f"[red]{url} not ready after {timeout:.0f}s; see {log}[/red]")
    return False


def up(
    ml_port: Annotated[int, typer.Option(help="ml-api port.")] = ML_API_PORT,
    port: Annotated[int, typer.Option(help="Backend port.")] = BACKEND_PORT,
    data: Annotated[
        Path, typer.Option(help="Data folder (Qdrant, document registry, logs).")
    ] = Path("./data"),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    import_models: Annotated[
        bool, typer.Option(help="Import the default models first when they are missing.")
    ] = True,
) -> None:
    """Start the ml-api and the backend (embedded Qdrant under --data); Ctrl-C stops both."""
    data = data.resolve()
    (data / "logs").mkdir(parents=True, exist_ok=True)
    pidfile = processes.PidFile(data / "ragctl-up.json")
    stale = pidfile.stale()
    if stale:
        console.print(f"Stopping what an earlier `ragctl up` left running (pids {stale})...")
        processes.stop_tree(stale)
        pidfile.clear()
    for name, p in (("ml-api", ml_port), ("backend", port)):
        owner = processes.port_owner(host, p)
        if owner is not None:
            console.print(
                f"[red]Port {p} ({name}) on {host} is already in use: {owner}.[/red]\n"
                f"Stop it, or choose another port (--{'ml-port' if name == 'ml-api' else 'port'})."
            )
            raise typer.Exit(1)
    if import_models:
        from models.build.importer import import_defaults
        from models.runtime.registry import find_model
        from models.runtime.settings import get_settings

        if find_model(get_settings().embedder) is None:
            console.print("Importing the default models (first run only)...")
            import_defaults(None)

    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    ml_url = f"http://{host}:{ml_port}"
    backend_env = {
        **env,
        "ML_API_URL": ml_url,
        "DATA_DIR": str(data),
        "QDRANT_PATH": os.environ.get("QDRANT_PATH", str(data / "qdrant")),
    }
    ml_log, backend_log = data / "logs" / "ml-api.log", data / "logs" / "backend.log"
    bentoml_cmd = [sys.executable, "-m", "bentoml", "serve", "service:MLService"]
    ml = processes.start([*bentoml_cmd, "--host", host, "--port", str(ml_port)], ROOT, env, ml_log)
    procs = [ml]
    pidfile.write([ml.pid])

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        with console.status(f"Starting the ml-api on {ml_url} (loading models)..."):
            if not _wait_ready(f"{ml_url}/readyz", ml, ml_log, timeout=300):
                raise typer.Exit(1)
        uvicorn_cmd = [sys.executable, "-m", "uvicorn", "backend.app:app", "--workers", "1"]
        backend_cmd = [*uvicorn_cmd, "--host", host, "--port", str(port)]
        backend = processes.start(backend_cmd, ROOT, backend_env, backend_log)
        procs.append(backend)
        pidfile.write([p.pid for p in procs])
        backend_url = f"http://{host}:{port}"
        with console.status(f"Starting the backend on {backend_url}..."):
            if not _wait_ready(f"{backend_url}/health", backend, backend_log, timeout=120):
                raise typer.Exit(1)
        console.print(
            f"[green]Ready.[/green]\n"
            f"  web page + API  {backend_url}/   (OpenAPI: {backend_url}/docs)\n"
            f"  ml-api          {ml_url}/   (API docs; spec: {ml_url}/docs.json)\n"
            f"  data            {data}\n"
            f"  logs            {ml_log}, {backend_log}\n"
            "Press Ctrl-C to stop."
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = next(p for p in procs if p.poll() is not None)
        name = "ml-api" if dead is ml else "backend"
        console.print(f"[red]{name} exited with {dead.returncode}; stopping the stack.[/red]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("Stopping...")
    finally:
        processes.stop_tree([p.pid for p in procs])
        pidfile.clear()
