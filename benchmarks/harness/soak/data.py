"""The soak's texts: SciFact documents and claims, rendered as the upload formats, and the
`name=weight` mixes of the CLI."""

from __future__ import annotations

import argparse
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    id: str
    title: str
    text: str


def load_data(folder: Path) -> tuple[list[Source], list[str]]:
    """SciFact-like BEIR folder: corpus.jsonl, and queries*.jsonl (titles when there are none)."""
    corpus: list[Source] = []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                text = (row.get("text") or "").strip()
                if text:
                    corpus.append(Source(str(row["_id"]), (row.get("title") or "").strip(), text))
    queries: list[str] = []
    for path in sorted(folder.glob("queries*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            queries += [json.loads(x)["text"] for x in fh if x.strip()]
    queries = [q[:1000] for q in queries if q.strip()] or [s.title or s.text[:200] for s in corpus]
    if not corpus:
        raise ValueError(f"{folder}/corpus.jsonl holds no documents")
    return corpus, queries


def _latin1(text: str) -> str:
    # fpdf2's core fonts are Latin-1 only.
    return text.encode("latin-1", "replace").decode("latin-1")


def render(fmt: str, title: str, text: str, tag: str) -> bytes:
    """The document as a file of kind `fmt`; `tag` makes its content unique to this upload."""
    if fmt in ("txt", "json"):
        return f"{title}\n\n{text}\n\n{tag}\n".encode()
    if fmt == "md":
        return f"# {title}\n\n{text}\n\n{tag}\n".encode()
    if fmt == "html":
        t, body = html.escape(title), html.escape(text)
        return (
            f"<!doctype html><html><head><title>{t}</title></head><body><h1>{t}</h1>"
            f"<p>{body}</p><p>{html.escape(tag)}</p></body></html>"
        ).encode()
    if fmt == "pdf":
        from fpdf import FPDF

        pdf = FPDF()
        pdf.set_font("helvetica", size=11)
        pdf.add_page()
        pdf.multi_cell(0, 6, _latin1(f"{title}\n\n{text}\n\n{tag}"))
        return bytes(pdf.output())
    if fmt == "docx":
        import docx

        document = docx.Document()
        document.add_heading(title, level=1)
        document.add_paragraph(text)
        document.add_paragraph(tag)
        buf = io.BytesIO()
        document.save(buf)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt}")


def weights(spec: str, allowed: Sequence[str]) -> dict[str, float]:
    """'query=75,upload=12' -> {"query": 75.0, "upload": 12.0}; names checked."""
    out: dict[str, float] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in allowed:
            raise argparse.ArgumentTypeError(f"{name!r}: one of {', '.join(allowed)}")
        out[name] = float(value or 1)
    if not any(v > 0 for v in out.values()):
        raise argparse.ArgumentTypeError(f"{spec!r}: no positive weight")
    return out
