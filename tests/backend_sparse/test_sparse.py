"""BM25 sparse encoder: tokenisation, weights, hashing."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import zlib

import pytest

from backend.store.sparse import STOP_WORDS, BM25Encoder, term_id, tokenize


def as_dict(vec: tuple[list[int], list[float]]) -> dict[int, float]:
    indices, values = vec
    assert len(indices) == len(values)
    return dict(zip(indices, values, strict=True))


def test_stemming_merges_word_forms() -> None:
    assert tokenize("studies studied Study studying") == ["studi"] * 4
    assert tokenize("Running runs run") == ["run"] * 3
    enc = BM25Encoder()
    q1 = enc.encode_query("mutation in tumours")
    q2 = enc.encode_query("Mutations of the tumour")
    assert q1 == q2
    doc = as_dict(enc.encode_document("The mutated gene mutates; mutations accumulate."))
    assert term_id("mutat") in doc


def test_stop_words_dropped_and_case_folded() -> None:
    assert tokenize("The cat and THE dog are in a box") == ["cat", "dog", "box"]
    assert tokenize("It is what it is.") == []
    assert {"the", "and", "not", "of", "a"} <= STOP_WORDS
    enc = BM25Encoder()
    assert enc.encode_query("the of and") == ([], [])


def test_unicode_digits_and_punctuation() -> None:
    assert tokenize("IL-6 levels; p53/TP53") == ["il", "6", "level", "p53", "tp53"]
    assert tokenize("Ärzte naïve café_bar") == ["ärzte", "naïv", "café", "bar"]
    assert tokenize("мутации ДНК") == ["мутации", "днк"]


def test_empty_text() -> None:
    enc = BM25Encoder()
    for text in ("", "   \n\t", "!!! ... ---", "the and of"):
        assert enc.encode_document(text) == ([], [])
        assert enc.encode_query(text) == ([], [])


def test_document_weights_bm25_formula() -> None:
    enc = BM25Encoder(k1=1.2, b=0.75, avg_len=4)
    # 6 tokens after stop-words: cell x3, grow x2, fast x1
    doc = as_dict(enc.encode_document("cells cell cell grow growing fast"))
    assert len(doc) == 3
    norm = 1.2 * (1 - 0.75 + 0.75 * 6 / 4)
    assert doc[term_id("cell")] == pytest.approx(3 * 2.2 / (3 + norm))
    assert doc[term_id("grow")] == pytest.approx(2 * 2.2 / (2 + norm))
    assert doc[term_id("fast")] == pytest.approx(1 * 2.2 / (1 + norm))
    assert doc[term_id("fast")] == pytest.approx(enc.term_weight(1, 6))


def test_indices_sorted_unique_u32() -> None:
    enc = BM25Encoder()
    text = "Alpha beta gamma delta alpha beta epsilon zeta eta theta " * 3
    for indices, values in (enc.encode_document(text), enc.encode_query(text)):
        assert indices == sorted(set(indices))
        assert all(0 <= i < 2**32 for i in indices)
        assert all(v > 0 for v in values)


def test_query_weight_one_per_unique_term() -> None:
    enc = BM25Encoder()
    indices, values = enc.encode_query("cancer cancer cancers treatment")
    assert len(indices) == 2
    assert values == [1.0, 1.0]


def test_saturation_monotone_and_bounded() -> None:
    enc = BM25Encoder(k1=1.2, b=0.75, avg_len=10)
    weights = [enc.term_weight(tf, 10) for tf in range(1, 50)]
    assert all(a < b for a, b in itertools.pairwise(weights))
    assert weights[-1] < enc.k1 + 1  # saturates below k1 + 1
    # gains shrink: the 2nd occurrence adds more than the 10th
    assert weights[1] - weights[0] > weights[10] - weights[9]
    # longer documents weigh the same tf less (b > 0); b = 0 ignores length
    assert enc.term_weight(2, 5) > enc.term_weight(2, 10) > enc.term_weight(2, 40)
    flat = BM25Encoder(b=0.0, avg_len=10)
    assert flat.term_weight(2, 5) == flat.term_weight(2, 500)
    # in a real document: repeating a word raises its weight, padding with others lowers it
    one = as_dict(enc.encode_document("enzyme activity"))[term_id("enzym")]
    three = as_dict(enc.encode_document("enzyme enzyme enzyme activity"))[term_id("enzym")]
    padded = as_dict(enc.encode_document("enzyme activity " + "other words here " * 10))
    assert three > one > padded[term_id("enzym")]


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        BM25Encoder(b=1.5)
    with pytest.raises(ValueError):
        BM25Encoder(avg_len=0)
    with pytest.raises(ValueError):
        BM25Encoder(k1=-1)


def test_hash_is_crc32_and_stable_across_processes() -> None:
    assert term_id("cancer") == zlib.crc32(b"cancer")
    # pinned values: changing them silently would break every existing index
    assert term_id("cancer") == 2887383057
    assert term_id("studi") == zlib.crc32(b"studi")
    code = (
        "from backend.store.sparse import BM25Encoder;"
        "print(BM25Encoder().encode_query('Studies of cancer cells'))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs.pop().strip() == str(BM25Encoder().encode_query("Studies of cancer cells"))


def test_fast_enough() -> None:
    enc = BM25Encoder()
    text = (
        "Alterations of the architecture of cerebral white matter in the developing human "
        "brain can affect cortical development and result in functional disabilities. "
    ) * 12
    docs = [f"{text} variant{i}" for i in range(500)]
    t0 = time.perf_counter()
    for d in docs:
        enc.encode_document(d)
    # ~250-word documents: well under a millisecond each (5k abstracts in a few seconds)
    assert time.perf_counter() - t0 < 2.5


def test_encoding_is_thread_safe() -> None:
    """Ingest encodes documents in several threads at once (the stemmer has per-call state)."""
    from concurrent.futures import ThreadPoolExecutor

    from backend.store import sparse

    words = [f"pseudouridylation{i} profiling{i} regulated{i} running{i}" for i in range(3000)]
    sparse._stem.cache_clear()
    expected = [sparse.tokenize(w) for w in words]
    sparse._stem.cache_clear()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(sparse.tokenize, words))
    assert got == expected
