"""What a benchmark report says about where it ran: CPU, cores, RAM, GPU, load, versions."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # no usable driver
        return None


def machine_info() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    return {
        "cpu": cpu,
        "cores": cores,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpu": gpu_name(),
    }


def machine_summary() -> str:
    """One line for a report's header: CPU, cores, RAM, OS, Python."""
    m = machine_info()
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']:.0f} GiB RAM, {m['os']}, "
        f"Python {m['python']}"
    )


def machine_line(m: dict[str, Any], device: str) -> str:
    where = (
        f"GPU {m['gpu']}, every contender on CUDA"
        if device == "cuda"
        else ("no GPU" if not m.get("gpu") else f"GPU {m['gpu']} not used") + " (everything on CPU)"
    )
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}; {where}"
    )


def loadavg() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in (
        "onnxruntime-gpu",
        "onnxruntime",
        "torch",
        "sentence-transformers",
        "FlagEmbedding",
        "transformers",
        "bentoml",
        "httpx",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out
