"""`ragctl ingest` and `ragctl query` against the real stack: a `bentoml serve` ml-api with the
real all-MiniLM-L6-v2 (no reranker) and a real backend process (uvicorn) with embedded Qdrant
in a temporary folder. The CLI runs as a subprocess, the way people use it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import Backend, launch_backend, make_docx, make_pdf
from cli_support import ragctl

LIGHTHOUSE = (
    "The lighthouse keeper climbs the spiral stairs every evening to light the lamp. Ships rely "
    "on the beam to avoid the rocks near the harbour entrance."
)
BAKING = (
    "# Sourdough\n\nBread dough rises because yeast ferments the sugars in flour. Knead the "
    "dough, let it proof overnight and bake it in a hot oven."
)
VOLCANO = (
    "Volcanoes erupt when magma rises through the crust. Lava flows and ash clouds can bury "
    "towns; Mount Vesuvius destroyed Pompeii in 79 AD."
)
TENNIS = "A tennis match is won in sets. Serena Williams won 23 Grand Slam singles titles."
WHALES = "# Whales\n\nBlue whales are the largest animals that ever lived; they eat krill."


def blank_pdf() -> bytes:
    """A valid PDF without any text: accepted at upload, fails during ingestion."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    return bytes(pdf.output())


@pytest.fixture(scope="module")
def backend(ml_api_minilm: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp("cli_backend")
    b = launch_backend(tmp / "data", tmp / "backend.log", ml_api_url=ml_api_minilm)
    yield b
    b.stop()


def documents(backend: Backend) -> dict[str, dict[str, Any]]:
    body = backend.client.get("/documents", params={"limit": 500}).json()
    return {d["filename"]: d for d in body["documents"]}


def row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"│ {name} "))


def test_ingest_and_query(backend: Backend, tmp_path: Path) -> None:
    work = tmp_path / "work"
    corpus = work / "corpus"
    (corpus / "papers").mkdir(parents=True)
    (corpus / ".drafts").mkdir()
    (corpus / "lighthouse.txt").write_text(LIGHTHOUSE)
    (corpus / "baking.md").write_text(BAKING)
    (corpus / "papers" / "volcano.pdf").write_bytes(make_pdf([VOLCANO, "Page two: lava."]))
    (corpus / "papers" / "tennis.docx").write_bytes(make_docx(["Tennis", TENNIS]))
    (corpus / "papers" / "broken.pdf").write_bytes(make_pdf([VOLCANO])[:300])  # truncated
    (corpus / "scan.pdf").write_bytes(blank_pdf())
    (corpus / ".hidden.txt").write_text("hidden file")
    (corpus / ".drafts" / "draft.md").write_text("hidden folder")
    (corpus / "photo.png").write_bytes(b"\x89PNG\r\n")
    ingest = ["ingest", "corpus", "--url", backend.url, "-m", "project=demo", "-m", "year:=2024"]

    proc = ragctl(*ingest, cwd=work)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "Summary: 4 indexed" in out and "0 skipped, 2 failed" in out, out
    broken = row(out, "corpus/papers/broken.pdf")
    assert "failed" in broken and "cannot open the PDF" in broken and "(HTTP 422)" in broken
    scan = row(out, "corpus/scan.pdf")
    assert "failed" in scan and "no extractable text" in scan
    assert "left out (type the backend does not read): 1 .png" in proc.stderr
    docs = documents(backend)
    good = {
        "corpus/lighthouse.txt",
        "corpus/baking.md",
        "corpus/papers/volcano.pdf",
        "corpus/papers/tennis.docx",
    }
    assert set(docs) == {*good, "corpus/scan.pdf"}  # hidden and .png files never sent
    for name in good:
        assert docs[name]["status"] == "indexed", docs[name]
        assert docs[name]["metadata"] == {"project": "demo", "year": 2024}
        assert f"{docs[name]['chunk_count']} chunks" in row(out, name)
    assert docs["corpus/scan.pdf"]["status"] == "failed"

    # The good files are searchable; the right one comes first.
    proc = ragctl(
        "query", "How did Pompeii get destroyed?", "--json", cwd=work, BACKEND_URL=backend.url
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    top = answer["results"][0]
    assert top["filename"] == "corpus/papers/volcano.pdf" and top["page"] == 1, answer
    assert answer["reranked"] is False  # the MiniLM ml-api has no reranker

    proc = ragctl("query", "Why does bread rise?", "--url", backend.url, cwd=work)
    assert proc.returncode == 0, proc.stderr
    first = next(line for line in proc.stdout.splitlines() if line.startswith("│ 1 "))
    assert "corpus/baking.md" in first and "Bread dough rises" in first
    assert "results, not reranked; embed" in proc.stdout

    # Filters: metadata and document id.
    query = ["query", "grand slam titles", "--url", backend.url, "--json"]
    proc = ragctl(*query, "-m", "project=demo", "-m", "year:=2024", cwd=work)
    assert json.loads(proc.stdout)["results"][0]["filename"] == "corpus/papers/tennis.docx"
    proc = ragctl(*query, "-m", "project=other", cwd=work)
    assert json.loads(proc.stdout)["results"] == []
    tennis_id = docs["corpus/papers/tennis.docx"]["id"]
    proc = ragctl(
        "query", "lamp", "--filter-document", tennis_id, "--url", backend.url, "--json", cwd=work
    )
    hits = json.loads(proc.stdout)["results"]
    assert hits and {h["document_id"] for h in hits} == {tennis_id}

    # Invalid input found by the backend: one line, exit 2.
    proc = ragctl("query", "x" * 3000, "--url", backend.url, cwd=work)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: HTTP 422: query:"), line

    # Re-run: everything good is skipped, the failed ones are tried (and fail) again.
    before = docs["corpus/scan.pdf"]
    proc = ragctl(*ingest, cwd=work)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "Summary: 0 indexed (0 chunks), 4 skipped, 2 failed" in out, out
    for name in good:
        assert "already indexed as" in row(out, name)
    assert "no extractable text" in row(out, "corpus/scan.pdf")
    after = documents(backend)["corpus/scan.pdf"]
    assert after["id"] == before["id"] and after["updated_at"] > before["updated_at"]

    # --glob: only markdown.
    more = work / "more"
    more.mkdir()
    (more / "whales.md").write_text(WHALES)
    (more / "extra.txt").write_text("Python lists and dictionaries.")
    (more / "guide.pdf").write_bytes(make_pdf(["A guide to knots for sailors."]))
    proc = ragctl("ingest", "more", "--glob", "*.md", "--url", backend.url, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Summary: 1 indexed" in proc.stdout
    docs = documents(backend)
    assert "more/whales.md" in docs and docs["more/whales.md"]["metadata"] == {}
    assert not {"more/extra.txt", "more/guide.pdf"} & set(docs)
