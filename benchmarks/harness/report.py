"""Markdown report pieces shared by the benchmarks: number formats, table sections and
appending a section to docs/benchmarks.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def section_markdown(s: Section, aligns: list[str]) -> list[str]:
    """A section as Markdown lines: its heading, the table (`aligns`: "---" or "---:" per
    column) and its notes."""

    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["", f"### {s.title}", ""]
    lines.append("| " + " | ".join(esc(c) for c in s.columns) + " |")
    lines.append("| " + " | ".join(aligns) + " |")
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in s.rows]
    if s.notes:
        lines.append("")
        lines += [f"{n}  " for n in s.notes]
    return lines


def f0(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def f1(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def ratio(x: float | None, ref: float | None) -> str:
    if x is None or not ref:
        return "-"
    return f"{x / ref:.2f}x"


DOC_INTRO = """# Benchmarks

Measured numbers for the ml-api and its peers, each section appended by the script that
produced it (with the date, the machine and the command, so a section can be re-run and
compared). Older sections stay as they were: compare like with like (same machine, same command).

- Throughput (`benchmarks/throughput.py`): embeddings and reranking, ml-api over HTTP against
  in-process ONNX Runtime, sentence-transformers, FlagEmbedding and Infinity, on SciFact texts.
"""


def append_markdown(path: Path, text: str, intro: str | None = DOC_INTRO) -> None:
    """Append `text` as a section; a new or empty file starts with `intro`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if intro and (not path.exists() or not path.read_text().strip()):
        path.write_text(intro)
    existing = path.read_text() if path.exists() else ""
    sep = (
        ""
        if not existing or existing.endswith("\n\n")
        else ("\n" if existing.endswith("\n") else "\n\n")
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write(sep + text)
