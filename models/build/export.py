"""Export Hugging Face encoders to ONNX (dynamic batch and sequence axes), verified against torch.

Two exporters, both checked to give the same numbers on these encoders (BERT, XLM-R...) with
torch 2.13 and transformers 4.57: the TorchScript one (`dynamo=False`) is tried first because
it is 3-9x faster (MiniLM: ~3 s against ~8-15 s on 2 cores), and the torch.export-based one
(`dynamo=True`, torch's default since 2.9) is the fallback for architectures TorchScript cannot
trace, and for when the deprecated TorchScript path goes away. Either way the result is one
`model.onnx`, plus one `model.onnx.data` only for models over ~1.5 GB (protobuf's limit is
2 GB). Every export is checked once against torch on a batch of a different shape than the
tracing sample (so the dynamic axes are exercised) and fails when it is off.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

Head = Literal["encoder", "sequence-classification"]
EXTERNAL_DATA_BYTES = 1_500_000_000
# max |onnx - torch| allowed, relative to max(1, max |torch|) on the real (unpadded) positions.
TOLERANCE = 1e-3


@dataclass
class ExportResult:
    path: Path
    input_names: list[str]
    output_name: str
    max_abs_diff: float
    seconds: float
    exporter: str  # "torchscript" or "dynamo"
    external_data: bool
    files: list[str] = field(default_factory=list)


def _wrap(model: Any, input_names: list[str], output_name: str) -> Any:
    """A module with explicit positional tensor inputs and one output tensor (what both
    exporters need: torch.export cannot map dynamic shapes onto *args)."""
    import torch

    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
            return out[output_name]

    class Triple(Pair):
        def forward(  # type: ignore[override]
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                return_dict=True,
            )
            return out[output_name]

    return (Triple if "token_type_ids" in input_names else Pair)().eval()


def model_input_names(model: Any, tokenizer_input_names: list[str] | None) -> list[str]:
    """input_ids, attention_mask, and token_type_ids when both the model and its tokenizer use
    them (XLM-R's forward takes token_type_ids but its tokenizer never produces them)."""
    names = ["input_ids", "attention_mask"]
    params = inspect.signature(model.forward).parameters
    wants_types = tokenizer_input_names is None or "token_type_ids" in tokenizer_input_names
    if "token_type_ids" in params and wants_types:
        names.append("token_type_ids")
    return names


def _sample(
    names: list[str], vocab_size: int, batch: int, length: int, seed: int
) -> tuple[Any, ...]:
    import torch

    g = torch.Generator().manual_seed(seed)
    low = min(1000, max(5, vocab_size // 4))
    high = max(low + 1, min(vocab_size, low + 5000))
    ids = torch.randint(low, high, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    if batch > 1:  # one padded row, so the mask path is traced and checked
        mask[-1, length // 2 :] = 0
    tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return tuple(tensors[n] for n in names)


def _param_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters and transformers print progress and warnings of their own (unused pooler
    weights, torchvision ops not registered...); keep the CLI's output clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_dynamo(
    module: Any, sample: tuple[Any, ...], names: list[str], output_name: str, out: Path, big: bool
) -> None:
    import torch

    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence")
    shapes = tuple({0: batch, 1: seq} for _ in names)
    program = torch.onnx.export(
        module,
        sample,
        dynamo=True,
        input_names=names,
        output_names=[output_name],
        dynamic_shapes=shapes,
        optimize=True,
        verbose=False,
        external_data=big,
    )
    assert program is not None
    program.save(str(out), external_data=big)


def _export_torchscript(
    module: Any, sample: tuple[Any, ...], names: list[str], output_name: str, out: Path, big: bool
) -> None:
    import onnx
    import torch

    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, output_name]}
    # It writes one file per tensor for big models: export aside, then save as one (+ .data).
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(
            module,
            sample,
            str(raw),
            dynamo=False,
            input_names=names,
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=17,
            do_constant_folding=True,
        )
        model = onnx.load(str(raw))
        onnx.save_model(
            model,
            str(out),
            save_as_external_data=big,
            all_tensors_to_one_file=True,
            location=out.name + ".data",
        )


def verify(
    onnx_path: Path,
    module: Any,
    names: list[str],
    vocab_size: int,
    head: Head,
) -> float:
    """max |onnx - torch| on a padded batch of a shape unlike the tracing sample."""
    import onnxruntime as ort
    import torch

    sample = _sample(names, vocab_size, batch=3, length=23, seed=1)
    with torch.inference_mode():
        ref = module(*sample).float().numpy()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feeds = {n: t.numpy() for n, t in zip(names, sample, strict=True)}
    got = session.run(None, feeds)[0].astype(np.float32)
    if got.shape != ref.shape:
        raise RuntimeError(f"ONNX output shape {got.shape} != torch {ref.shape}")
    if head == "encoder":  # padded positions carry no meaning: compare the real tokens only
        mask = feeds["attention_mask"].astype(bool)[..., None]
        diff = np.where(mask, np.abs(got - ref), 0.0)
    else:
        diff = np.abs(got - ref)
    max_diff = float(diff.max())
    scale = max(1.0, float(np.abs(ref).max()))
    if not np.isfinite(max_diff) or max_diff > TOLERANCE * scale:
        raise RuntimeError(
            f"ONNX export of {onnx_path.parent} is off: max |onnx - torch| = {max_diff:.3g} "
            f"(tolerance {TOLERANCE * scale:.3g})"
        )
    return max_diff


def export_model(
    model_dir: str | Path,
    out: str | Path,
    head: Head = "encoder",
    tokenizer_input_names: list[str] | None = None,
    exporter: Literal["dynamo", "torchscript", "auto"] = "auto",
) -> ExportResult:
    """Export the model in `model_dir` (a transformers folder) to `out` (model.onnx).

    head "encoder": AutoModel, output `last_hidden_state` (batch, sequence, hidden).
    head "sequence-classification": AutoModelForSequenceClassification, output `logits`.
    Inputs: input_ids, attention_mask [, token_type_ids], int64, axes (batch, sequence).
    """
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    model_dir, out = Path(model_dir), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cls = AutoModel if head == "encoder" else AutoModelForSequenceClassification
    # eager attention traces to plain MatMul/Softmax that every exporter and ORT handle.
    with _quiet():
        model = cls.from_pretrained(model_dir, attn_implementation="eager", local_files_only=True)
    model = model.float().eval()
    output_name = "last_hidden_state" if head == "encoder" else "logits"
    names = model_input_names(model, tokenizer_input_names)
    module = _wrap(model, names, output_name)
    vocab_size = int(model.config.vocab_size)
    sample = _sample(names, vocab_size, batch=2, length=16, seed=0)
    big = _param_bytes(model) > EXTERNAL_DATA_BYTES

    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    used, errors = "", []
    for name in order:
        _remove_outputs(out)
        try:
            with torch.inference_mode(False), torch.no_grad(), _quiet():
                if name == "dynamo":
                    _export_dynamo(module, sample, names, output_name, out, big)
                else:
                    _export_torchscript(module, sample, names, output_name, out, big)
            used = name
            break
        except Exception as err:
            log.warning("ONNX export with the %s exporter failed: %s", name, err)
            errors.append(f"{name}: {err}")
    if not used:
        raise RuntimeError(f"ONNX export of {model_dir} failed: " + "; ".join(errors))

    max_diff = verify(out, module, names, vocab_size, head)
    files = sorted(f.name for f in out.parent.iterdir() if f.name.startswith(out.name))
    return ExportResult(
        path=out,
        input_names=names,
        output_name=output_name,
        max_abs_diff=max_diff,
        seconds=time.perf_counter() - start,
        exporter=used,
        external_data=big,
        files=files,
    )


def _remove_outputs(out: Path) -> None:
    for f in (out, out.with_name(out.name + ".data")):
        if f.exists():
            f.unlink()
