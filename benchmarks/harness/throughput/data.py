"""The SciFact texts every contender gets: long, short and mixed sets."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.throughput.plan import Plan

# -- data --------------------------------------------------------------------------------------


@dataclass
class TextSet:
    name: str
    texts: list[str]
    tokens: list[int] = field(default_factory=list)  # per text, truncated, special included

    @property
    def n_tokens(self) -> int:
        return sum(self.tokens)


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_texts(data: Path, plan: Plan) -> tuple[TextSet, TextSet, TextSet, list[str], list[str]]:
    """(long, short, mixed, all corpus texts, all queries), deterministic."""
    corpus = [f"{d.get('title', '')} {d['text']}".strip() for d in _jsonl(data / "corpus.jsonl")]
    queries = [q["text"] for q in _jsonl(data / "queries-train.jsonl")]
    rng = random.Random(0)
    docs = corpus[:]
    rng.shuffle(docs)
    qs = queries[:]
    rng.shuffle(qs)
    long = TextSet("long", docs[: plan.n_long])
    short = TextSet("short", qs[: plan.n_short])
    mixed_texts = docs[: plan.mixed_long] + qs[: plan.mixed_short]
    rng.shuffle(mixed_texts)
    mixed = TextSet("mixed", mixed_texts)
    return long, short, mixed, corpus, queries
