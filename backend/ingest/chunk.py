"""Token-aware chunking with the embedding model's own tokenizer.

Chunks are measured in the embedder's tokens, so a chunk never gets truncated by the model: the
capacity is capped by the model's max length minus its special tokens ([CLS]/[SEP] and friends).
Chunks never cross a page, so each keeps its page number and character offsets into that page.
Chunks are also capped in characters: a word the tokenizer cannot split (WordPiece maps any word
over 100 characters to one [UNK]) would otherwise make one chunk of a 20 MB single-line file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from semantic_text_splitter import MarkdownSplitter, TextSplitter
from tokenizers import Tokenizer

from backend.ingest.parse import Page

# Characters per token a chunk may average before it is cut by length instead (English prose
# averages ~4; URLs and code ~3).
MAX_CHARS_PER_TOKEN = 12


@dataclass(frozen=True)
class Chunk:
    index: int  # position in the document, 0-based
    page: int | None
    start: int  # character offsets into the page text: page.text[start:end] == text
    end: int
    text: str


def load_tokenizer(tokenizer_json: str | dict[str, Any]) -> Tokenizer:
    body = tokenizer_json if isinstance(tokenizer_json, str) else json.dumps(tokenizer_json)
    tok = Tokenizer.from_str(body)
    # tokenizer.json files often carry the training-time truncation/padding (MiniLM's truncates
    # at 128); the splitter must see true lengths.
    tok.no_truncation()
    tok.no_padding()
    return tok


class Chunker:
    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        chunk_size: int,
        overlap: int,
        max_length: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.special_tokens = len(tokenizer.encode("", add_special_tokens=True).ids)
        capacity = chunk_size
        if max_length:
            capacity = min(capacity, max_length - self.special_tokens)
        if capacity < 1:
            raise ValueError(f"max_length {max_length} leaves no room for text")
        self.capacity = capacity
        self.max_chars = capacity * MAX_CHARS_PER_TOKEN
        # The splitter requires overlap < capacity; a small model max length can force it down.
        self.overlap = min(overlap, capacity // 2)
        self._text = TextSplitter.from_huggingface_tokenizer(tokenizer, capacity, self.overlap)
        self._markdown = MarkdownSplitter.from_huggingface_tokenizer(
            tokenizer, capacity, self.overlap
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def split(self, pages: list[Page], kind: str = "txt") -> list[Chunk]:
        splitter = self._markdown if kind == "md" else self._text
        chunks: list[Chunk] = []
        for page in pages:
            for start, text in splitter.chunk_indices(page.text):
                for s, t in self._cap(start, text):
                    chunks.append(Chunk(len(chunks), page.number, s, s + len(t), t))
        return chunks

    def _cap(self, start: int, text: str) -> list[tuple[int, str]]:
        """Cut a chunk longer than max_chars into pieces, at whitespace when there is some."""
        limit = self.max_chars
        if len(text) <= limit:
            return [(start, text)]
        pieces = []
        pos = 0
        while pos < len(text):
            end = min(pos + limit, len(text))
            if end < len(text):
                space = max(text.rfind(" ", pos + limit // 2, end), text.rfind("\n", pos, end))
                if space > pos + limit // 2:
                    end = space + 1
            piece = text[pos:end]
            lead = len(piece) - len(piece.lstrip())
            piece = piece.strip()
            if piece:
                pieces.append((start + pos + lead, piece))
            pos = end
        return pieces
