"""Shared fixtures: a temporary BentoML model store with tiny and real models, and real
`bentoml serve` processes of the ml-api on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from stack import (
    MINILM,
    NO_RERANKER,
    ROOT,
    TINY_EMBEDDER,
    TINY_RERANKER,
    free_port,
    stop_process,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def ragctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ragctl.main", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BENTOML_HOME holding tiny-embedder, tiny-reranker and the real MiniLM (as `minilm`)."""
    import modelfactory

    home = tmp_path_factory.mktemp("bentoml_home")
    src = tmp_path_factory.mktemp("model_src")
    env = {**os.environ, "BENTOML_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    ragctl(
        "models",
        "import-embedder",
        str(modelfactory.make_tiny_embedder(src / "emb")),
        "--name",
        TINY_EMBEDDER,
        env=env,
    )
    ragctl(
        "models",
        "import-reranker",
        str(modelfactory.make_tiny_cross_encoder(src / "rr")),
        "--name",
        TINY_RERANKER,
        env=env,
    )
    ragctl("models", "import-embedder", str(modelfactory.minilm_dir()), "--name", MINILM, env=env)
    return home


@dataclass
class MLApi:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop_process(proc)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{log_path.read_text()[-5000:]}")


StartMLApi = Callable[..., MLApi]


@pytest.fixture(scope="session")
def start_ml_api(
    model_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartMLApi]:
    """Factory: start a real `bentoml serve` of the ml-api; stopped at session end."""
    started: list[MLApi] = []
    logs = tmp_path_factory.mktemp("ml_api_logs")

    def start(
        embedder: str = TINY_EMBEDDER, reranker: str = TINY_RERANKER, **extra_env: str
    ) -> MLApi:
        port = free_port()
        # A BENTOML_HOME of its own over the shared models: `bentoml serve` empties
        # $BENTOML_HOME/prometheus_multiproc_dir at start, which would wipe the /metrics of the
        # instances already running.
        home = logs / f"home_{port}"
        home.mkdir()
        (home / "models").symlink_to(model_store / "models")
        env = {
            **os.environ,
            "BENTOML_HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "ML_API_EMBEDDER": embedder,
            "ML_API_RERANKER": reranker,
            "BENTOML_DO_NOT_TRACK": "true",
            **{k.upper(): v for k, v in extra_env.items()},
        }
        log_path = logs / f"ml_api_{port}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bentoml",
                    "serve",
                    "service:MLService",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        api = MLApi(f"http://127.0.0.1:{port}", proc, log_path, env)
        started.append(api)
        wait_ready(f"{api.url}/readyz", proc, log_path, timeout=240)
        return api

    yield start
    for api in started:
        api.stop()


@pytest.fixture(scope="session")
def ml_api(start_ml_api: StartMLApi) -> str:
    """Base URL of the ml-api with the tiny embedder and the tiny cross-encoder."""
    return start_ml_api().url


@pytest.fixture(scope="session")
def ml_api_minilm(start_ml_api: StartMLApi) -> str:
    """Base URL of the ml-api with the real all-MiniLM-L6-v2 embedder and no reranker."""
    return start_ml_api(embedder=MINILM, reranker=NO_RERANKER).url
