"""Token-aware chunking with the real MiniLM tokenizer."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from backend.ingest.chunk import Chunker, load_tokenizer
from backend.ingest.parse import Page

PROSE = " ".join(
    f"Sentence {i} explains how topic {i % 7} relates to café naïveté and résumés."
    for i in range(300)
)


@pytest.fixture(scope="module")
def chunker(minilm_tokenizer_json: dict[str, Any]) -> Chunker:
    return Chunker(
        load_tokenizer(minilm_tokenizer_json), chunk_size=128, overlap=16, max_length=256
    )


def test_tokenizer_truncation_is_disabled(minilm_tokenizer_json: dict[str, Any]) -> None:
    # MiniLM's tokenizer.json truncates at 128 tokens; counting must see the full length.
    tok = load_tokenizer(minilm_tokenizer_json)
    assert len(tok.encode("word " * 1000).ids) > 1000


def test_chunks_fit_and_offsets_point_into_the_page(chunker: Chunker) -> None:
    chunks = chunker.split([Page(3, PROSE)])
    assert len(chunks) > 10
    for i, c in enumerate(chunks):
        assert c.index == i
        assert c.page == 3
        assert PROSE[c.start : c.end] == c.text
        assert chunker.count_tokens(c.text) <= 128
    # Consecutive chunks overlap (CHUNK_OVERLAP) without leaving gaps.
    assert all(b.start < a.end for a, b in itertools.pairwise(chunks))


def test_capacity_is_capped_by_model_max_length(minilm_tokenizer_json: dict[str, Any]) -> None:
    tok = load_tokenizer(minilm_tokenizer_json)
    chunker = Chunker(tok, chunk_size=256, overlap=200, max_length=64)
    assert chunker.special_tokens == 2  # [CLS] and [SEP]
    assert chunker.capacity == 62
    assert chunker.overlap == 31  # overlap must stay below capacity
    assert max(chunker.count_tokens(c.text) for c in chunker.split([Page(None, PROSE)])) <= 62


def test_chunks_never_cross_pages(chunker: Chunker) -> None:
    pages = [Page(1, "Apples are red. " * 5), Page(2, "Pears are green. " * 5)]
    chunks = chunker.split(pages)
    assert [c.page for c in chunks] == [1, 2]
    assert chunks[1].start == 0 and "Pears" in chunks[1].text


def test_markdown_splits_at_headings(minilm_tokenizer_json: dict[str, Any]) -> None:
    chunker = Chunker(load_tokenizer(minilm_tokenizer_json), chunk_size=40, overlap=0)
    section = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 2
    text = f"# Alpha\n\n{section}\n\n# Beta\n\n{section}"
    chunks = chunker.split([Page(None, text)], kind="md")
    assert any(c.text.startswith("# Beta") for c in chunks)
    for c in chunks:
        assert text[c.start : c.end] == c.text


def test_blank_pages_give_no_chunks(chunker: Chunker) -> None:
    assert chunker.split([Page(1, "   \n\n  ")]) == []


def test_an_unsplittable_line_is_cut_by_length(chunker: Chunker) -> None:
    # WordPiece reads any word over 100 characters as one [UNK]: a 1 MB line with no space is
    # "one token", so the token budget alone would make it a single 1 MB chunk.
    text = "a" * 1_000_000
    chunks = chunker.split([Page(None, text)])
    assert chunker.max_chars == 128 * 12
    assert len(chunks) == -(-len(text) // chunker.max_chars)
    assert all(len(c.text) <= chunker.max_chars for c in chunks)
    assert "".join(c.text for c in chunks) == text
    assert all(text[c.start : c.end] == c.text for c in chunks)


def test_length_cuts_prefer_whitespace(chunker: Chunker) -> None:
    long_words = " ".join(["b" * 150] * 40)  # 40 [UNK] tokens, 6 kB
    chunks = chunker.split([Page(None, long_words)])
    assert len(chunks) > 1
    for c in chunks:
        assert len(c.text) <= chunker.max_chars
        assert long_words[c.start : c.end] == c.text
        assert set(c.text.split()) == {"b" * 150}  # no word was cut in two
