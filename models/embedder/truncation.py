"""Truncating tokenization that only pays for the text truncation keeps.

A fast tokenizer with truncation still normalizes and tokenizes the whole text before it drops
the tail: a 7 MB text costs seconds of CPU to keep 512 tokens. Here each text is first cut by
characters to a prefix generous enough for natural text (`CHARS_PER_TOKEN` per kept token), and
the prefix is tokenized. The result is the same as truncating the whole text as long as the
token that truncation drops first does not come from the word the character cut went through
(words are tokenized independently of what follows them). When that is not certain (a prefix of
whitespace, a word longer than the cut) the prefix grows fourfold and is tried again, ending at
the whole text at worst.
"""

from __future__ import annotations

from typing import Any

# English runs at 4-5 characters per WordPiece/BPE token; 16 leaves room for long words and
# markup, so one try settles all but pathological text.
CHARS_PER_TOKEN = 16
GROWTH = 4


def _settled(full: Any, kept: int) -> bool:
    """True when truncating `full` (the untruncated encoding of a cut prefix) to `kept` content
    tokens drops at least one token and keeps none of the last (possibly cut) word."""
    content = [i for i, special in enumerate(full.special_tokens_mask) if not special]
    if len(content) <= kept:
        return False
    words = full.word_ids
    return words[content[kept - 1]] != words[content[-1]]


def encode_truncated(
    full_tok: Any, trunc_tok: Any, texts: list[str], max_length: int
) -> list[list[int]]:
    """Token ids of each text truncated to `max_length` (special tokens included).

    `full_tok` and `trunc_tok` are the same `tokenizers.Tokenizer`, configured without and with
    truncation at `max_length`."""
    kept = max(1, max_length - full_tok.num_special_tokens_to_add(False))
    first = max_length * CHARS_PER_TOKEN
    prefixes = [t[:first] for t in texts]
    out = [e.ids for e in trunc_tok.encode_batch(prefixes)]
    for i, text in enumerate(texts):
        cut = first
        while len(text) > cut:
            prefix = text[:cut]
            if _settled(full_tok.encode(prefix), kept):
                out[i] = trunc_tok.encode(prefix).ids
                break
            cut *= GROWTH
        else:
            if cut != first:  # grown past the end: the whole text
                out[i] = trunc_tok.encode(text).ids
    return out
