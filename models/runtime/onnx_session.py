"""ONNX Runtime sessions for the runtimes: providers, thread settings, fp16 on GPU."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime import devices
from models.runtime.settings import MLSettings

log = logging.getLogger(__name__)

_NUMPY_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


@dataclass
class OrtSession:
    session: Any  # onnxruntime.InferenceSession (thread-safe for concurrent run())
    providers: list[str]
    device: str  # "cuda:0" or "cpu"
    dtype: str  # "float16" or "float32"
    input_types: dict[str, Any] = field(default_factory=dict)  # name -> numpy dtype
    workdir: Any = None  # keeps a converted model's files alive with the session

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def run(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        typed = {k: v.astype(self.input_types[k], copy=False) for k, v in feeds.items()}
        return self.session.run([output], typed)[0]


def session_options(settings: MLSettings) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = settings.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if settings.ort_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3  # errors only; the provider check below reports fallbacks
    return so


def _onnx_bytes(onnx_path: Path) -> int:
    data = onnx_path.with_name(onnx_path.name + ".data")
    return onnx_path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def to_fp16(onnx_path: str | Path, workdir: str | Path | None = None) -> bytes | str:
    """The model converted to float16 weights and compute, float32 inputs/outputs kept.

    Returns the serialized model, or, when the result would pass protobuf's 2 GB limit, the path
    of a copy saved with external data under `workdir` (which must outlive the session).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx_path = Path(onnx_path)
    size = _onnx_bytes(onnx_path)
    model = onnx.load(str(onnx_path))
    converted = convert_float_to_float16(
        model, keep_io_types=True, disable_shape_infer=size > 1_500_000_000
    )
    if size < 3_600_000_000:
        return converted.SerializeToString()
    if workdir is None:
        raise ValueError("a float16 model over 2 GB needs a workdir for its external data")
    out = Path(workdir) / "model.fp16.onnx"
    onnx.save_model(
        converted,
        str(out),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=out.name + ".data",
    )
    return str(out)


def create_session(
    onnx_path: str | Path, settings: MLSettings, gpu: bool | None = None
) -> OrtSession:
    """A session on CUDA when `settings.device` asks for it (and a GPU is present for "auto"),
    else CPU. Raises (or warns, per `settings.on_cuda_unavailable`) when CUDA was wanted but
    the session is not on it. float16 only on CUDA with `settings.fp16`."""
    import onnxruntime as ort

    if gpu is None:
        gpu = devices.gpu_present()
    providers = devices.choose_providers(settings.device, gpu, settings.fp16)
    cuda = devices.CUDA_EP in devices.provider_names(providers)
    if cuda:
        devices.preload_cuda_libraries()
    fp16 = cuda and settings.fp16
    workdir = tempfile.TemporaryDirectory(prefix="ragstack-fp16-") if fp16 else None
    model = to_fp16(onnx_path, workdir.name) if workdir else str(onnx_path)
    so = session_options(settings)
    session = ort.InferenceSession(model, so, providers=providers)
    active = devices.check_active_providers(
        providers, session.get_providers(), settings.on_cuda_unavailable
    )
    on_cuda = devices.CUDA_EP in active
    if fp16 and not on_cuda:  # warned fallback: float32 on CPU
        session = ort.InferenceSession(str(onnx_path), so, providers=[devices.CPU_EP])
        active, fp16 = session.get_providers(), False
    types = {i.name: _NUMPY_TYPES.get(i.type, np.int64) for i in session.get_inputs()}
    return OrtSession(
        session=session,
        providers=list(active),
        device="cuda:0" if on_cuda else "cpu",
        dtype="float16" if fp16 else "float32",
        input_types=types,
        workdir=workdir,
    )
