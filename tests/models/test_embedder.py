"""OnnxEmbedder, loaded through the real store import, against sentence-transformers."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from models_support import (
    TINY_CLS,
    TINY_LAST,
    TINY_MEAN,
    Defaults,
    Sources,
    embed,
    in_planned_batches,
)

from models.runtime.embedder import load_embedder
from models.runtime.embedder.onnx import OnnxEmbedder
from models.runtime.onnx_session import to_fp16
from models.runtime.settings import MLSettings

TOL = 1e-4

TEXTS = [
    "hello",
    "What is BentoML?",
    "  leading and trailing spaces  ",
    "Qdrant is a vector database written in Rust; it stores dense and sparse vectors.",
    "Ünïcödé, 中文 text and emoji 🙂 mixed in",
    "A much longer passage about retrieval, embeddings and reranking. " * 20,  # > 256 tokens
    "short",
    "The quick brown fox jumps over the lazy dog. " * 3,
]


def settings(**kw: object) -> MLSettings:
    return MLSettings(device="cpu", intra_op_threads=2, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def minilm(defaults: Defaults) -> OnnxEmbedder:
    """The `embedder` that import_defaults stored (all-MiniLM-L6-v2), via load_embedder."""
    embedder = load_embedder(settings(embedder="embedder"))
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


@pytest.fixture(scope="module")
def st_minilm():
    import modelfactory
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(modelfactory.minilm_dir()), device="cpu")


def without_normalize(model):  # the ST pipeline minus its Normalize module
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=[model[0], model[1]], device="cpu")


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def test_info(minilm: OnnxEmbedder, defaults: Defaults) -> None:
    info = minilm.info
    assert info.name == "embedder" and info.tag == defaults.tags["embedder"]
    assert info.source == "sentence-transformers/all-MiniLM-L6-v2"
    assert info.revision and info.revision.startswith("sha256:")
    assert (info.dimension, info.max_length, info.pooling) == (384, 256, "mean")
    assert info.normalize is True
    assert (info.device, info.dtype, info.providers) == ("cpu", "float32", ["CPUExecutionProvider"])
    assert info.backend == "onnx"


def test_batched_normalized_matches_sentence_transformers(minilm, st_minilm) -> None:
    ref = st_minilm.encode(TEXTS, batch_size=len(TEXTS), normalize_embeddings=True)
    got = embed(minilm, TEXTS)
    assert got.dtype == np.float32
    assert max_diff(got, ref) < TOL
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_single_texts_match_sentence_transformers(minilm, st_minilm) -> None:
    for text in TEXTS:
        ref = st_minilm.encode([text], normalize_embeddings=True)
        assert max_diff(embed(minilm, [text]), ref) < TOL, text


def test_unnormalized_matches_sentence_transformers(minilm, st_minilm) -> None:
    raw = without_normalize(st_minilm)
    ref = raw.encode(TEXTS, batch_size=4)
    got = embed(minilm, TEXTS, normalize=False)
    assert max_diff(got, ref) < TOL
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)  # really unnormalized
    single = np.concatenate([embed(minilm, [t], normalize=False) for t in TEXTS])
    assert max_diff(single, ref) < TOL


def test_forward_pads_and_pools(minilm) -> None:
    ids = minilm.tokenize(TEXTS)
    batched = minilm.forward(ids)  # one padded batch, unnormalized
    assert batched.shape == (len(TEXTS), 384) and batched.dtype == np.float32
    alone = np.concatenate([minilm.forward([x]) for x in ids])  # no padding at all
    assert max_diff(batched, alone) < 1e-5
    assert max_diff(batched, embed(minilm, TEXTS, normalize=False)) < 1e-5
    assert minilm.forward([]).shape == (0, 384)


def test_token_budget_sub_batches_keep_input_order(defaults: Defaults, minilm) -> None:
    """Padding differs from batch to batch; the embeddings must not."""
    ids = minilm.tokenize(TEXTS)
    planned = in_planned_batches(minilm.forward, ids, [len(x) for x in ids], 64)
    assert max_diff(planned, embed(minilm, TEXTS, normalize=False)) < 1e-5


def test_tokenize_and_truncation(minilm, st_minilm) -> None:
    ids = minilm.tokenize(TEXTS)
    full = minilm.tokenize(TEXTS, truncate=False)
    long = 5
    assert len(ids[long]) == 256 and len(full[long]) > 256
    assert ids[long][-1] == full[long][-1] == 102  # [SEP] kept when truncating
    assert ids[long][:255] == full[long][:255]
    for i, text in enumerate(TEXTS):
        # same ids as the transformers tokenizer sentence-transformers uses
        ref = st_minilm.tokenizer(text.strip(), truncation=True, max_length=256)["input_ids"]
        assert ids[i] == ref, text
        if i != long:
            assert full[i] == ids[i]
    # over-long text: the embedding is the one of its first 256 tokens
    cut = minilm.forward([ids[long]])
    assert max_diff(minilm.forward([[*full[long][:255], 102]]), cut) < 1e-6


def test_concurrent_forward_is_thread_safe(minilm) -> None:
    ids = minilm.tokenize(TEXTS)
    expected = minilm.forward(ids)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(2):
                results.append(minilm.forward(ids))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 6
    for r in results:
        assert max_diff(r, expected) < 1e-5


@pytest.mark.parametrize(
    ("name", "attr", "pooling"),
    [(TINY_MEAN, "mean", "mean"), (TINY_CLS, "cls", "cls"), (TINY_LAST, "last", "last")],
)
def test_tiny_pooling_matches_sentence_transformers(
    tiny_store: dict[str, str], sources: Sources, name: str, attr: str, pooling: str
) -> None:
    from sentence_transformers import SentenceTransformer

    embedder = load_embedder(settings(embedder=name))
    assert embedder.info.pooling == pooling
    st = SentenceTransformer(str(getattr(sources, attr)), device="cpu")
    ref = st.encode(TEXTS, normalize_embeddings=False, batch_size=3)
    assert max_diff(embed(embedder, TEXTS, normalize=embedder.info.normalize), ref) < TOL
    # the tiny models keep 128 tokens (sentence_bert_config.json)
    assert embedder.info.max_length == 128
    assert max(len(x) for x in embedder.tokenize(TEXTS)) == 128


def test_cls_and_mean_pool_differently(tiny_store: dict[str, str]) -> None:
    mean = load_embedder(settings(embedder=TINY_MEAN))
    cls = load_embedder(settings(embedder=TINY_CLS))
    # same seed, same weights: only the pooling differs
    assert max_diff(embed(mean, TEXTS, normalize=False), embed(cls, TEXTS, normalize=False)) > 1e-2


def test_fp16_conversion_runs(tiny_store: dict[str, str]) -> None:
    """The GPU path's float16 conversion (run here on the CPU provider): close to float32."""
    import onnxruntime as ort

    from models.runtime.registry import find_model

    path = Path(find_model(TINY_MEAN).path) / "model.onnx"
    model = to_fp16(path)
    assert isinstance(model, bytes)
    s16 = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    s32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1000, 5000, (2, 12), dtype=np.int64)}
    feeds["attention_mask"] = np.ones_like(feeds["input_ids"])
    feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    out16 = s16.run(None, feeds)[0]
    assert out16.dtype == np.float32  # float32 in and out
    assert max_diff(out16, s32.run(None, feeds)[0]) < 2e-2


def test_missing_embedder_is_a_clear_error(bentoml_home: Path) -> None:
    with pytest.raises(LookupError, match="import-embedder"):
        load_embedder(settings(embedder="no-such-embedder"))


def test_tokenizer_json(minilm) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(minilm.tokenizer_json())
    text = TEXTS[5]
    assert tok.encode(text.strip()).ids == minilm.tokenize([text], truncate=False)[0]


def test_background_forward_is_the_same_model_on_one_thread(minilm) -> None:
    """The bulk lane's session: same vectors, its own single-threaded ORT session (so all of a
    pass runs on the low-priority thread that calls it), made once."""
    forward = minilm.background_forward()
    assert forward is not None
    ids = minilm.tokenize(TEXTS)
    assert max_diff(forward(ids), minilm.forward(ids)) < 1e-5
    session = minilm._background_ort
    assert session is not None and session is not minilm.ort
    assert session.session.get_session_options().intra_op_num_threads == 1
    assert minilm.ort.session.get_session_options().intra_op_num_threads == 2
    minilm.background_forward()
    assert minilm._background_ort is session
