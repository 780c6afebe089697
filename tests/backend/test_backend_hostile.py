"""A corpus of bad files, made here, against a real backend process with the default limits and
the real ml-api: each file gets its own specific 4xx or `failed` reason, and the server keeps
answering queries after every one of them."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from backend_support import Backend, launch_backend, make_pdf

LATIN1 = "Crème brûlée et café au lait: la façade du garçon naïf, déjà vue à Noël. " * 20


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    status: int  # of the upload
    outcome: str  # 4xx: start of the detail; 202: final status, then ": error start" if failed


def pdf_bomb(pages: int = 3000) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=8)
    for i in range(pages):
        pdf.add_page()
        pdf.cell(0, 5, f"p{i}")
    return bytes(pdf.output())


def scanned_pdf() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 80, 120)  # a drawing only: no text layer
    return bytes(pdf.output())


def zipped(name: str, text: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, text)
    return buf.getvalue()


def corpus() -> list[Case]:
    good_pdf = make_pdf([f"Page {i}: tides and moorings of the outer harbour." for i in range(5)])
    return [
        Case("truncated.pdf", good_pdf[: len(good_pdf) // 2], 422, "truncated.pdf: cannot open"),
        Case(
            "bomb.pdf",
            pdf_bomb(),
            422,
            "bomb.pdf: the PDF has 3000 pages; the limit is 2000 (MAX_PDF_PAGES)",
        ),
        Case("scan.pdf", scanned_pdf(), 202, "failed: no extractable text"),
        # 20 MB on one line: within MAX_UPLOAD_BYTES, over MAX_EXTRACTED_CHARS.
        Case(
            "line20mb.txt",
            b"a" * 20_000_000,
            202,
            "failed: the extracted text has 20000000 characters; the limit is 5000000"
            " (MAX_EXTRACTED_CHARS)",
        ),
        # 2 MB on one line, within every limit: chunked by length, indexed.
        Case("line2mb.txt", b"b" * 2_000_000, 202, "indexed"),
        Case("latin1.txt", LATIN1.encode("latin-1"), 202, "indexed"),
        Case(
            "binary.txt",
            bytes(range(256)) * 64,
            422,
            "binary.txt: binary content in a text file (NUL bytes)",
        ),
        Case("elf.md", b"\x7fELF\x02\x01\x01" + b"\x01" * 500, 422, "elf.md: binary content"),
        Case("empty.txt", b"", 422, "empty.txt: the file is empty"),
        Case("blank.txt", b" \n\t " * 100, 422, "blank.txt: the file has no text"),
        Case(
            "docs.zip",
            zipped("a.txt", b"inside"),
            415,
            "docs.zip: zip archives are not accepted (archives are never expanded)",
        ),
        Case("notes.txt", zipped("a.txt", b"inside"), 415, "notes.txt: zip archives"),
        Case("report.docx", zipped("a.txt", b"inside"), 422, "report.docx: not a DOCX"),
    ]


@pytest.fixture(scope="module")
def backend(ml_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp("hostile")
    b = launch_backend(tmp / "data", tmp / "backend.log", ml_api_url=ml_api)
    yield b
    b.stop()


def test_bad_file_corpus(backend: Backend) -> None:
    docs: dict[str, dict[str, object]] = {}
    for case in corpus():
        resp = backend.upload((case.name, case.data))
        assert resp.status_code == case.status, (case.name, resp.text)
        if case.status != 202:
            assert resp.json()["detail"].startswith(case.outcome), (case.name, resp.json())
        else:
            doc = backend.wait(resp.json()["documents"][0]["id"], timeout=180)
            docs[case.name] = doc
            status, _, reason = case.outcome.partition(": ")
            assert doc["status"] == status, (case.name, doc, backend.log()[-3000:])
            if reason:
                assert doc["error"].startswith(reason), (case.name, doc)
                assert doc["chunks_stored"] == 0
            else:
                assert doc["chunks_stored"] == doc["chunk_count"] > 0
        # The server keeps answering after every file.
        query = backend.query("harbour moorings", top_k=3)
        assert query.status_code == 200, (case.name, query.text)
    assert backend.proc.poll() is None
    assert backend.client.get("/documents").json()["total"] == len(docs)

    # Legacy text was decoded, not mangled; the long line was cut by length into many chunks.
    latin = docs["latin1.txt"]
    hits = backend.query("café", filters={"document_ids": [latin["id"]]}).json()["results"]
    assert hits and all("Crème brûlée et café au lait" in h["text"] for h in hits)
    line = docs["line2mb.txt"]
    assert line["chunk_count"] > 1000  # type: ignore[operator]
    hits = backend.query("b", top_k=100, filters={"document_ids": [line["id"]]}).json()
    assert len(hits["results"]) == 100
    assert all(set(h["text"]) == {"b"} and len(h["text"]) <= 2000 for h in hits["results"])
