"""Packaging, checked statically (no Docker engine or GPU here): the bento, its requirements,
the backend image's dependency set and the compose file."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from stack import ROOT, TINY_EMBEDDER, TINY_RERANKER


def uv_export(*groups: str) -> str:
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV to its own binary
    assert uv, "uv is needed (make test installs it)"
    args = [uv, "export", "--frozen", "--no-hashes", "--no-header"]
    args += ["--no-default-groups", "--no-emit-project"]
    for g in groups:
        args += ["--group", g]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def pinned(requirements: str) -> dict[str, str]:
    out = {}
    for line in requirements.splitlines():
        line = line.split(";")[0].strip()
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            out[name.lower()] = version
    return out


def test_ml_requirements_match_the_lock() -> None:
    committed = (ROOT / "requirements" / "ml.txt").read_text()
    assert pinned(committed) == pinned(uv_export("ml")), (
        "requirements/ml.txt is stale: uv export --frozen --no-hashes --no-header "
        "--no-default-groups --group ml --no-emit-project -o requirements/ml.txt"
    )


def test_ml_requirements_carry_cuda13_wheels() -> None:
    reqs = pinned((ROOT / "requirements" / "ml.txt").read_text())
    assert reqs["bentoml"] == "1.4.39"
    assert "onnxruntime-gpu" in reqs and "onnxruntime" not in reqs
    assert "torch" in reqs
    # CUDA 13 runtime and cuDNN 9 come as PyPI wheels: only the host driver is needed.
    assert any(n.startswith("nvidia-cudnn-cu13") for n in reqs)
    assert any(n.startswith("nvidia-cublas") for n in reqs)
    assert not any(n.endswith("-cu12") for n in reqs)


def test_backend_group_has_no_torch_or_onnxruntime() -> None:
    reqs = pinned(uv_export("backend"))
    assert {"fastapi", "qdrant-client", "uvicorn"} <= set(reqs)
    heavy = {n for n in reqs if n in ("torch", "onnxruntime", "onnxruntime-gpu", "transformers")}
    assert not heavy, heavy


def test_bento_build(model_store: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BENTOML_HOME": str(model_store),
        "ML_API_EMBEDDER": TINY_EMBEDDER,
        "ML_API_RERANKER": TINY_RERANKER,
        "BENTOML_DO_NOT_TRACK": "true",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = model_store / "bentos" / name / version
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    # BentoML 1.4 records models per service; export/containerize copies them in from the store.
    listed = manifest["models"] + [m for svc in manifest["services"] for m in svc["models"]]
    packed = {m["tag"].split(":")[0] for m in listed}
    assert packed == {TINY_EMBEDDER, TINY_RERANKER}
    assert (bento / "src" / "service.py").exists()
    assert (bento / "src" / "serving" / "batcher.py").exists()
    assert (bento / "src" / "ragstack_common" / "http.py").exists()  # serving imports it
    # The runtime the service loads, not the build side (hub, export, quantize, import).
    assert (bento / "src" / "models" / "runtime" / "embedder" / "onnx.py").exists()
    assert not (bento / "src" / "models" / "build").exists()
    assert not (bento / "src" / "tests").exists()
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    # No CUDA 12 base image under the CUDA 13 wheels.
    assert "nvidia/cuda" not in dockerfile
    assert "python:3.11" in dockerfile or "3.11" in dockerfile
    reqs = pinned((bento / "env" / "python" / "requirements.txt").read_text())
    assert reqs.get("onnxruntime-gpu") and reqs.get("torch") and reqs.get("nvidia-cudnn-cu13")


def test_compose_file_is_valid_and_reserves_a_gpu() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed (`make test` installs Debian's package)")
    out = subprocess.run(
        [exe, "-f", "docker-compose.yml", "config"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    assert set(services) == {"ml-api", "backend", "qdrant"}
    devices = services["ml-api"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["count"] == 1
    assert "gpu" in devices[0]["capabilities"]
    assert "readyz" in " ".join(services["ml-api"]["healthcheck"]["test"])
    backend = services["backend"]
    assert backend["environment"]["ML_API_URL"] == "http://ml-api:8001"
    assert backend["environment"]["QDRANT_URL"] == "http://qdrant:6333"
    assert backend["depends_on"]["ml-api"]["condition"] == "service_healthy"
    assert backend["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:v")  # pinned, not latest


def test_backend_dockerfile_is_slim_and_non_root() -> None:
    text = (ROOT / "backend" / "Dockerfile").read_text()
    assert "--no-default-groups --group backend" in text
    assert "--frozen" in text
    assert "USER app" in text
    assert text.index("COPY pyproject.toml uv.lock") < text.index("COPY backend")


def test_backend_image_copies_every_project_package_the_backend_imports() -> None:
    """The image holds only what it COPYs: a project package the backend imports but the
    Dockerfile leaves out fails at start-up in the container, which no other test runs."""
    project = {"backend", "models", "serving", "ragctl", "ragstack_common", "benchmarks"}
    imported: set[str] = set()
    for path in (ROOT / "backend").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    needed = imported & project
    assert "ragstack_common" in needed  # the walk sees the shared package
    text = (ROOT / "backend" / "Dockerfile").read_text()
    copied = {
        line.split()[1]
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from" not in line
    }
    assert needed <= copied, f"backend/Dockerfile does not COPY {sorted(needed - copied)}"
