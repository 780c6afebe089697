"""(query, passage) tokenization with `tokenizers`, exactly as FlagEmbedding's FlagReranker does
it with transformers: the query cut at 3/4 of max_length, the passage at max_length, then
special tokens added and the passage cut ("only_second") so the pair fits max_length."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.runtime.reranker.base import EncodedPair


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens around a pair `A`, `B` and the token type of each part."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    prefix_types: list[int]
    middle_types: list[int]
    suffix_types: list[int]
    type_a: int
    type_b: int

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def build(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        ids = [*self.prefix, *a, *self.middle, *b, *self.suffix]
        types = [
            *self.prefix_types,
            *[self.type_a] * len(a),
            *self.middle_types,
            *[self.type_b] * len(b),
            *self.suffix_types,
        ]
        return ids, types


def probe_template(tokenizer: Any) -> PairTemplate:
    """Read the pair template off the tokenizer's post-processor (Bert, Roberta or Template
    processing: special tokens around sequences with one token type each)."""
    a = tokenizer.encode("a", add_special_tokens=False)
    b = tokenizer.encode("b", add_special_tokens=False)
    if not a.ids or not b.ids:  # pragma: no cover - every real vocabulary has "a" and "b"
        raise ValueError("cannot probe the tokenizer's pair template")
    enc = tokenizer.post_process(a, b, add_special_tokens=True)
    parts: dict[str, tuple[list[int], list[int]]] = {"prefix": ([], []), "middle": ([], [])}
    parts["suffix"] = ([], [])
    type_a = type_b = 0
    seen = 0  # non-special tokens so far: the first len(a) are A's, the rest B's
    state = "prefix"
    for tok_id, type_id, special in zip(
        enc.ids, enc.type_ids, enc.special_tokens_mask, strict=True
    ):
        if not special:
            if seen < len(a.ids):
                type_a, state = type_id, "middle"
            else:
                type_b, state = type_id, "suffix"
            seen += 1
        else:
            parts[state][0].append(tok_id)
            parts[state][1].append(type_id)
    template = PairTemplate(
        prefix=parts["prefix"][0],
        middle=parts["middle"][0],
        suffix=parts["suffix"][0],
        prefix_types=parts["prefix"][1],
        middle_types=parts["middle"][1],
        suffix_types=parts["suffix"][1],
        type_a=type_a,
        type_b=type_b,
    )
    ids, _ = template.build(a.ids, b.ids)
    if ids != enc.ids:  # pragma: no cover - a processor this model does not describe
        raise ValueError("the tokenizer's pair template is not prefix A middle B suffix")
    return template


def cut_texts(tokenizer: Any, texts: list[str], max_tokens: int) -> list[str]:
    """Each text cut after its first `max_tokens` tokens, at the token's character offset.
    `tokenizer` is a `tokenizers.Tokenizer` with truncation off."""
    out = []
    for text, enc in zip(
        texts, tokenizer.encode_batch(texts, add_special_tokens=False), strict=True
    ):
        out.append(text if len(enc.ids) <= max_tokens else text[: enc.offsets[max_tokens - 1][1]])
    return out


class PairTokenizer:
    """Thread-safe: the `tokenizers.Tokenizer` is configured once and then only read."""

    def __init__(self, tokenizer_json: str | Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.template = probe_template(self.tokenizer)
        self.max_length = max_length
        self.query_max_length = max_length * 3 // 4  # FlagReranker's default

    def _ids(self, texts: list[str]) -> list[list[int]]:
        unique = list(dict.fromkeys(texts))  # usually one query for every pair
        encoded = self.tokenizer.encode_batch(unique, add_special_tokens=False)
        by_text = {t: e.ids for t, e in zip(unique, encoded, strict=True)}
        return [by_text[t] for t in texts]

    def cut(self, texts: list[str], max_tokens: int) -> list[str]:
        return cut_texts(self.tokenizer, texts, max_tokens)

    def encode(self, pairs: list[tuple[str, str]]) -> list[EncodedPair]:
        """Each pair truncated as FlagReranker truncates, with its untruncated length."""
        qs = self._ids([q for q, _ in pairs])
        ps = self._ids([p for _, p in pairs])
        out = []
        for q, p in zip(qs, ps, strict=True):
            length = len(q) + len(p) + self.template.num_special
            q = q[: self.query_max_length]
            p = p[: self.max_length]
            overflow = len(q) + len(p) + self.template.num_special - self.max_length
            # transformers' only_second: cut the passage, unless it is too short to absorb it
            if 0 < overflow < len(p):
                p = p[:-overflow]
            ids, types = self.template.build(q, p)
            out.append(EncodedPair(ids, types, length))
        return out
