"""Device and ONNX Runtime execution-provider selection.

`onnxruntime.get_available_providers()` lists CUDA whenever the onnxruntime-gpu wheel is
installed, GPU or not, so it says nothing about the machine: `gpu_present()` asks torch (the
driver) instead, and `check_active_providers()` looks at what a session really ended up using.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
from collections.abc import Sequence
from typing import Any, Literal

log = logging.getLogger(__name__)

Device = Literal["auto", "cuda", "cpu"]
OnUnavailable = Literal["fail", "warn"]
Provider = str | tuple[str, dict[str, Any]]

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


def gpu_present() -> bool:
    """True when a CUDA device is really usable: the NVIDIA driver loads and reports at least one
    device (CUDA_VISIBLE_DEVICES is honoured). Asks torch when it is already imported, else the
    driver directly (importing torch just for this costs seconds)."""
    if "torch" in sys.modules:
        try:
            import torch

            return bool(torch.cuda.is_available()) and torch.cuda.device_count() > 0
        except Exception:  # pragma: no cover - broken driver installs raise here
            log.debug("torch.cuda probe failed", exc_info=True)
            return False
    return _driver_device_count() > 0


def _driver_device_count() -> int:
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    try:
        if libcuda.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        if libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    except Exception:  # pragma: no cover
        log.debug("libcuda probe failed", exc_info=True)
        return 0


def wants_cuda(device: Device, gpu: bool) -> bool:
    """Whether `device` asks for CUDA on a machine where a GPU is (`gpu`) or is not present."""
    return device == "cuda" or (device == "auto" and gpu)


def choose_providers(device: Device, gpu: bool, fp16: bool = True) -> list[Provider]:
    """ONNX Runtime providers, in priority order, for `device` ("auto"|"cuda"|"cpu").

    CUDA (device 0) with CPU as fallback when CUDA is wanted (explicitly, or "auto" with a GPU
    present), else CPU only. `device="cuda"` without a GPU still lists CUDA, so the session
    falls back and `check_active_providers` reports it. With `fp16=False` TF32 is turned off so
    float32 stays float32 on Ampere and newer.
    """
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, not {device!r}")
    if not wants_cuda(device, gpu):
        return [CPU_EP]
    cuda_options: dict[str, Any] = {
        "device_id": 0,
        "arena_extend_strategy": "kNextPowerOfTwo",
        "cudnn_conv_algo_search": "HEURISTIC",
        "use_tf32": 1 if fp16 else 0,
    }
    return [(CUDA_EP, cuda_options), CPU_EP]


def provider_names(providers: Sequence[Provider]) -> list[str]:
    return [p if isinstance(p, str) else p[0] for p in providers]


def check_active_providers(
    wanted: Sequence[Provider],
    active: Sequence[str],
    on_unavailable: OnUnavailable = "fail",
) -> list[str]:
    """Compare the providers asked for with `session.get_providers()`.

    When CUDA was wanted but is not active, raise RuntimeError (`on_unavailable="fail"`) or log
    a warning and go on on CPU (`"warn"`). Returns the active providers.
    """
    active = list(active)
    if CUDA_EP in provider_names(wanted) and CUDA_EP not in active:
        msg = (
            "CUDA was requested but ONNX Runtime is running on "
            f"{', '.join(active) or 'no provider'}: no usable GPU, or the CUDA 13 / cuDNN 9 "
            "libraries (nvidia-* wheels) or the NVIDIA driver (>= 580) could not be loaded. "
            "Set ML_API_DEVICE=cpu to run on CPU, or ML_API_ON_CUDA_UNAVAILABLE=warn to fall "
            "back to CPU with a warning."
        )
        if on_unavailable == "fail":
            raise RuntimeError(msg)
        log.warning("%s Falling back to CPU.", msg)
    return active


_dlls_preloaded = False


def preload_cuda_libraries() -> None:
    """Let ONNX Runtime find CUDA/cuDNN in the nvidia-* wheels (torch cu130 pulls them in).

    Imports torch first (it loads the same libraries), then `onnxruntime.preload_dlls()`.
    Safe to call more than once; failures are logged, the provider check reports them.
    """
    global _dlls_preloaded
    if _dlls_preloaded:
        return
    _dlls_preloaded = True
    with contextlib.suppress(ImportError):  # torch loads libcudart/cublas/cudnn from the wheels
        import torch  # noqa: F401
    try:
        import onnxruntime as ort

        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            preload()
    except Exception:  # pragma: no cover - only on broken GPU installs
        log.warning("onnxruntime.preload_dlls() failed", exc_info=True)


def torch_device(device: Device, gpu: bool, on_unavailable: OnUnavailable = "fail") -> str:
    """The torch device for a PyTorch runtime: "cuda:0" or "cpu".

    `device="cuda"` without a GPU raises (`"fail"`) or warns and returns "cpu" (`"warn"`).
    """
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, not {device!r}")
    if device == "cpu":
        return "cpu"
    if gpu:
        return "cuda:0"
    if device == "cuda":
        msg = (
            "CUDA was requested (ML_API_DEVICE=cuda) but torch sees no usable GPU. "
            "Set ML_API_DEVICE=cpu, or ML_API_ON_CUDA_UNAVAILABLE=warn to fall back to CPU."
        )
        if on_unavailable == "fail":
            raise RuntimeError(msg)
        log.warning("%s Falling back to CPU.", msg)
    return "cpu"
