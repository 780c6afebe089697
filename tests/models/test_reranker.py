"""FlagCrossEncoder and OnnxCrossEncoder (loaded from the store) against FlagReranker itself."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from models_support import TINY_RERANKER, Sources, count_tokens, in_planned_batches, score

from models.build import importer
from models.runtime.reranker import load_reranker
from models.runtime.reranker.flag import FlagCrossEncoder
from models.runtime.reranker.onnx import OnnxCrossEncoder
from models.runtime.settings import MLSettings

FLAG_TOL = 1e-5
ONNX_TOL = 1e-4  # ORT fuses/reorders float32 math; measured ~5e-7 on the tiny model

QUERY = "what is the capital of france"
DOCS = [
    "Paris is the capital and most populous city of France.",
    "Berlin is the capital of Germany.",
    "x",
    "A long passage about many unrelated things, cities and rivers. " * 60,  # > 512 tokens
    "The Eiffel Tower is in Paris.",
    "banana bread recipe",
    "Paris is the capital and most populous city of France.",  # a duplicate
]
PAIRS = [(QUERY, d) for d in DOCS] + [
    ("a very long query that goes on " * 80, "short passage"),  # query over 3/4 max_length
    ("q", "passage " * 700),
]


def settings(**kw: object) -> MLSettings:
    base: dict[str, object] = {"reranker": TINY_RERANKER, "device": "cpu", "intra_op_threads": 2}
    return MLSettings(**(base | kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def flag(tiny_store: dict[str, str]) -> FlagCrossEncoder:
    r = load_reranker(settings())
    assert isinstance(r, FlagCrossEncoder)
    return r


@pytest.fixture(scope="module")
def onnx(tiny_store: dict[str, str]) -> OnnxCrossEncoder:
    r = load_reranker(settings(reranker_backend="onnx"))
    assert isinstance(r, OnnxCrossEncoder)
    return r


def flag_reference(folder: Path, pairs: list[tuple[str, str]], max_length: int) -> np.ndarray:
    """FlagReranker called directly on the cross-encoder folder it was imported from."""
    from FlagEmbedding import FlagReranker

    ref = FlagReranker(str(folder), devices="cpu", max_length=max_length, normalize=False)
    return np.asarray(ref.compute_score(pairs), dtype=np.float32)


@pytest.fixture(scope="module")
def reference(sources: Sources) -> np.ndarray:
    return flag_reference(sources.cross_encoder, PAIRS, 512)


def test_info(flag: FlagCrossEncoder, onnx: OnnxCrossEncoder, tiny_store: dict[str, str]) -> None:
    for r, backend in ((flag, "flag"), (onnx, "onnx")):
        assert r.info.name == TINY_RERANKER and r.info.tag == tiny_store[TINY_RERANKER]
        assert (r.info.max_length, r.info.device, r.info.dtype) == (512, "cpu", "float32")
        assert r.info.backend == backend
    assert onnx.info.providers == ["CPUExecutionProvider"]


def test_flag_matches_flagreranker(flag: FlagCrossEncoder, reference: np.ndarray) -> None:
    scores = np.asarray(score(flag, PAIRS))
    assert np.abs(scores - reference).max() < FLAG_TOL
    assert list(np.argsort(-scores, kind="stable")) == list(np.argsort(-reference, kind="stable"))
    assert scores[0] == pytest.approx(scores[6], abs=1e-6)  # duplicate passage, same score


def test_onnx_matches_flagreranker(onnx: OnnxCrossEncoder, reference: np.ndarray) -> None:
    scores = np.asarray(score(onnx, PAIRS))
    assert np.abs(scores - reference).max() < ONNX_TOL
    assert list(np.argsort(-scores, kind="stable")) == list(np.argsort(-reference, kind="stable"))


def test_same_tokens_as_flagreranker(flag: FlagCrossEncoder, onnx: OnnxCrossEncoder) -> None:
    hf = flag.encode(PAIRS)  # FlagReranker's own tokenization helpers
    ours = onnx.encode(PAIRS)  # tokenizers, re-done
    for a, b in zip(hf, ours, strict=True):
        assert a.input_ids == b.input_ids
        assert a.token_type_ids == b.token_type_ids
    assert max(len(e.input_ids) for e in ours) == 512
    assert len(ours[7].input_ids) < 512  # the long query was cut at 3/4 max_length
    counts = count_tokens(flag, PAIRS)
    assert counts == count_tokens(onnx, PAIRS)
    tok = flag.tokenizer
    assert counts == [len(tok(q, p)["input_ids"]) for q, p in PAIRS]  # untruncated
    assert counts[3] > 512


def test_short_max_length_truncates_like_flagreranker(
    tiny_store: dict[str, str], sources: Sources
) -> None:
    ref = flag_reference(sources.cross_encoder, PAIRS, 32)
    f = load_reranker(settings(rerank_max_length=32))
    o = load_reranker(settings(rerank_max_length=32, reranker_backend="onnx"))
    assert f.info.max_length == o.info.max_length == 32
    assert np.abs(np.asarray(score(f, PAIRS)) - ref).max() < FLAG_TOL
    assert np.abs(np.asarray(score(o, PAIRS)) - ref).max() < ONNX_TOL


def test_token_budget_sub_batches_keep_input_order(
    tiny_store: dict[str, str], reference: np.ndarray
) -> None:
    """Padding differs from batch to batch; the scores must not."""
    for backend in ("flag", "onnx"):
        r = load_reranker(settings(reranker_backend=backend))
        encoded = r.encode(PAIRS)
        lengths = [len(e.input_ids) for e in encoded]
        got = in_planned_batches(r.forward, encoded, lengths, 600)
        assert np.abs(got - reference).max() < ONNX_TOL, backend
        assert score(r, []) == []


@pytest.mark.parametrize("backend", ["flag", "onnx"])
def test_concurrent_score_is_thread_safe(
    backend: str, flag: FlagCrossEncoder, onnx: OnnxCrossEncoder
) -> None:
    r = flag if backend == "flag" else onnx
    pairs = PAIRS[:3] + PAIRS[4:7]
    expected = score(r, pairs)
    results: list[list[float]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(score(r, pairs))
                count_tokens(r, pairs)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 12
    for got in results:
        assert np.abs(np.asarray(got) - expected).max() < 1e-6


def test_flag_loads_without_the_network(
    tiny_store: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading never reaches for the hub, even with HF_HUB_OFFLINE unset: every connection
    attempt fails loudly here."""
    attempts: list[object] = []

    def no_network(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    r = load_reranker(settings())
    assert r is not None and attempts == []
    assert len(score(r, PAIRS[:2])) == 2


def test_missing_reranker(bentoml_home: Path) -> None:
    assert load_reranker(settings(reranker="no-such-reranker")) is None
    with pytest.raises(LookupError, match="import-reranker"):
        load_reranker(settings(reranker="no-such-reranker", require_reranker=True))


def test_onnx_backend_needs_the_export(sources: Sources, empty_store: Path) -> None:
    importer.import_reranker(str(sources.cross_encoder), "no-onnx", onnx=False)
    with pytest.raises(FileNotFoundError, match=r"no model\.onnx"):
        load_reranker(settings(reranker="no-onnx", reranker_backend="onnx"))
    assert isinstance(load_reranker(settings(reranker="no-onnx")), FlagCrossEncoder)


def test_cut_passages(flag: FlagCrossEncoder, onnx: OnnxCrossEncoder) -> None:
    texts = ["short", DOCS[3], "Ünïcödé 中文 words and more words, and then some more"]
    for r in (flag, onnx):
        cut = r.cut_passages(texts, 8)
        assert cut[0] == "short"
        assert DOCS[3].startswith(cut[1]) and len(cut[1]) < len(DOCS[3])
        counts = count_tokens(r, [("", c) for c in cut])
        empty = count_tokens(r, [("", "")])[0]
        assert [n - empty for n in counts] == [1, 8, 8]
    assert flag.cut_passages(texts, 8) == onnx.cut_passages(texts, 8)
