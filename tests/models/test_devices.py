"""Device and execution-provider selection, and the check that CUDA really is in use."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from models.runtime import devices
from models.runtime.onnx_session import create_session, session_options
from models.runtime.settings import MLSettings
from serving.batch_plan import plan_batches

CPU = devices.CPU_EP
CUDA = devices.CUDA_EP


def test_gpu_present_is_a_real_check() -> None:
    import torch

    assert devices.gpu_present() == (torch.cuda.is_available() and torch.cuda.device_count() > 0)
    # onnxruntime-gpu lists CUDA whatever the machine: that is not what gpu_present() asks.
    assert isinstance(devices.gpu_present(), bool)


def test_cpu_only_without_gpu() -> None:
    assert devices.choose_providers("auto", gpu=False) == [CPU]
    assert devices.choose_providers("cpu", gpu=False) == [CPU]


def test_cpu_when_asked_even_with_gpu() -> None:
    assert devices.choose_providers("cpu", gpu=True) == [CPU]


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_cuda_then_cpu_with_gpu(device: str) -> None:
    providers = devices.choose_providers(device, gpu=True)  # type: ignore[arg-type]
    assert len(providers) == 2 and providers[1] == CPU
    name, options = providers[0]
    assert name == CUDA
    assert options["device_id"] == 0


def test_cuda_requested_without_gpu_is_still_tried() -> None:
    # So that the session falls back and check_active_providers reports it.
    assert devices.provider_names(devices.choose_providers("cuda", gpu=False)) == [CUDA, CPU]


def test_fp16_flag_controls_tf32() -> None:
    assert devices.choose_providers("cuda", True, fp16=True)[0][1]["use_tf32"] == 1
    assert devices.choose_providers("cuda", True, fp16=False)[0][1]["use_tf32"] == 0


def test_bad_device() -> None:
    with pytest.raises(ValueError):
        devices.choose_providers("tpu", gpu=False)  # type: ignore[arg-type]


def test_active_cuda_passes() -> None:
    wanted = devices.choose_providers("auto", gpu=True)
    assert devices.check_active_providers(wanted, [CUDA, CPU], "fail") == [CUDA, CPU]


def test_cpu_wanted_cpu_active_passes() -> None:
    assert devices.check_active_providers([CPU], [CPU], "fail") == [CPU]


def test_cuda_wanted_but_inactive_fails() -> None:
    wanted = devices.choose_providers("cuda", gpu=True)
    with pytest.raises(RuntimeError, match="CUDA was requested") as err:
        devices.check_active_providers(wanted, [CPU], "fail")
    assert "ML_API_DEVICE=cpu" in str(err.value)
    assert "ML_API_ON_CUDA_UNAVAILABLE=warn" in str(err.value)


def test_cuda_wanted_but_inactive_warns(caplog: pytest.LogCaptureFixture) -> None:
    wanted = devices.choose_providers("auto", gpu=True)
    with caplog.at_level(logging.WARNING, logger="models.runtime.devices"):
        assert devices.check_active_providers(wanted, [CPU], "warn") == [CPU]
    assert any("Falling back to CPU" in r.getMessage() for r in caplog.records)


def test_torch_device() -> None:
    assert devices.torch_device("cpu", gpu=True) == "cpu"
    assert devices.torch_device("auto", gpu=True) == "cuda:0"
    assert devices.torch_device("auto", gpu=False) == "cpu"
    assert devices.torch_device("cuda", gpu=True) == "cuda:0"
    with pytest.raises(RuntimeError, match="CUDA was requested"):
        devices.torch_device("cuda", gpu=False, on_unavailable="fail")
    assert devices.torch_device("cuda", gpu=False, on_unavailable="warn") == "cpu"


# -- real ONNX Runtime sessions ----------------------------------------------------------------


@pytest.fixture(scope="module")
def identity_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path_factory.mktemp("onnx") / "identity.onnx"
    onnx.save(model, str(path))
    return path


def test_session_on_cpu(identity_onnx: Path) -> None:
    s = create_session(identity_onnx, MLSettings(device="cpu", intra_op_threads=1))
    assert s.providers == [CPU] and s.device == "cpu" and s.dtype == "float32"
    x = np.arange(3, dtype=np.float32)
    assert np.array_equal(s.run("y", {"x": x}), x)


def test_auto_without_gpu_is_cpu(identity_onnx: Path) -> None:
    s = create_session(identity_onnx, MLSettings(device="auto"), gpu=False)
    assert s.providers == [CPU] and s.device == "cpu"


@pytest.mark.skipif(devices.gpu_present(), reason="needs a machine without a usable GPU")
def test_real_session_cuda_requested_but_inactive(identity_onnx: Path) -> None:
    settings = MLSettings(device="cuda", on_cuda_unavailable="fail")
    with pytest.raises(RuntimeError, match="CUDA was requested"):
        create_session(identity_onnx, settings)
    settings = MLSettings(device="cuda", on_cuda_unavailable="warn")
    s = create_session(identity_onnx, settings)  # fp16 asked, but not on CPU
    assert s.providers == [CPU] and s.device == "cpu" and s.dtype == "float32"


# -- sub-batch planning ------------------------------------------------------------------------


@pytest.mark.parametrize(("spinning", "entry"), [(False, "0"), (True, "1")])
def test_thread_spinning_follows_the_setting(spinning: bool, entry: str) -> None:
    so = session_options(MLSettings(ort_spinning=spinning, intra_op_threads=2))
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == entry
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == entry
    assert so.intra_op_num_threads == 2


def test_plan_batches_budget_and_items() -> None:
    lengths = [5, 50, 7, 20, 20, 3, 64, 1]
    batches = plan_batches(lengths, token_budget=64, max_items=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) <= 3
        assert longest * len(b) <= 64 or len(b) == 1
    # longest first: the first batch starts with the longest item
    assert batches[0][0] == 6


def test_plan_batches_oversized_item_goes_alone() -> None:
    assert plan_batches([100, 2, 2], token_budget=10, max_items=8) == [[0], [1, 2]]
    assert plan_batches([], 10, 4) == []
