"""Parsers and the cheap upload checks, on real files of every format made here."""

from __future__ import annotations

import io
import os
import zipfile

import pytest
from backend_support import make_docx, make_html, make_pdf

from backend.ingest.parse import (
    InvalidDocument,
    UnsupportedType,
    archive_type,
    detect_kind,
    parse,
    precheck,
)


@pytest.mark.parametrize(
    ("filename", "content_type", "kind"),
    [
        ("a.txt", None, "txt"),
        ("A.MD", None, "md"),
        ("notes.markdown", None, "md"),
        ("x.pdf", "application/octet-stream", "pdf"),
        ("page.htm", None, "html"),
        ("report.docx", None, "docx"),
        ("README", "text/plain; charset=utf-8", "txt"),
        (None, "application/pdf", "pdf"),
    ],
)
def test_detect_kind(filename: str | None, content_type: str | None, kind: str) -> None:
    assert detect_kind(filename, content_type) == kind


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [("photo.png", "image/png"), ("old.doc", None), ("noext", "application/octet-stream")],
)
def test_detect_kind_rejects_unsupported(filename: str, content_type: str | None) -> None:
    with pytest.raises(UnsupportedType, match="supported: txt, md, pdf, html, docx"):
        detect_kind(filename, content_type)


def test_text_utf8_and_bom() -> None:
    pages = parse("txt", "\ufeffcafé\r\nnaïve".encode())
    assert pages[0].text == "café\nnaïve"
    assert pages[0].number is None


def test_text_in_a_legacy_encoding_is_detected() -> None:
    text = "Les élèves étudient à l'école où les cafés sont très appréciés. " * 5
    pages = parse("txt", text.encode("cp1252"))
    assert "élèves étudient" in pages[0].text


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"   \n\t ", "only whitespace"),
        (b"hello\x00world" * 10, "NUL bytes"),
        (make_pdf(["hidden pdf"]), "looks like a PDF"),
        (bytes(range(1, 32)) * 200, "control characters"),
    ],
)
def test_text_rejects_empty_and_binary(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidDocument, match=reason):
        parse("txt", data)


def test_random_bytes_are_not_text() -> None:
    data = os.urandom(4096).replace(b"\x00", b"\x01")
    with pytest.raises(InvalidDocument):
        parse("md", data)


def test_markdown_is_kept_as_text() -> None:
    pages = parse("md", b"# Title\n\nSome *markdown* text.\n")
    assert pages[0].text == "# Title\n\nSome *markdown* text.\n"


def test_html_drops_script_style_nav_and_keeps_blocks() -> None:
    html = make_html("Quarterly report", "Revenue grew <b>strongly</b> in Q3.")
    html = html.replace(
        b"</body>",
        b"<ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table></body>",
    )
    text = parse("html", html)[0].text
    assert "Quarterly report" in text
    assert "Revenue grew strongly in Q3." in text
    assert "one\n\ntwo" in text
    assert "a | b" in text
    for junk in ("scriptjunk", "navjunk", "color: red"):
        assert junk not in text


def test_html_without_text_fails() -> None:
    with pytest.raises(InvalidDocument, match="no extractable text"):
        parse("html", b"<html><body><script>x()</script></body></html>")


def test_pdf_pages_are_numbered() -> None:
    data = make_pdf(["First page about apples.", "Second page about pears."])
    assert precheck("pdf", data) == 2
    pages = parse("pdf", data)
    assert [p.number for p in pages] == [1, 2]
    assert "apples" in pages[0].text
    assert "pears" in pages[1].text
    assert "\r" not in pages[0].text


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"just some text, not a pdf", "no %PDF- header"),
        (b"%PDF-1.7\n garbage garbage", "cannot open the PDF"),
    ],
)
def test_pdf_corrupt(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidDocument, match=reason):
        precheck("pdf", data)


def test_pdf_encrypted() -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="user")
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(0, 10, "secret")
    with pytest.raises(InvalidDocument, match="encrypted"):
        precheck("pdf", bytes(pdf.output()))


def test_pdf_without_text_layer() -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)  # a drawing, no text
    with pytest.raises(InvalidDocument, match="no extractable text"):
        parse("pdf", bytes(pdf.output()))


def test_docx_paragraphs_and_tables_in_order() -> None:
    data = make_docx(
        ["Handbook", "Vacation policy: 25 days per year.", "Remote work is allowed."],
        table=[["Plan", "Price"], ["Basic", "10 EUR"]],
    )
    text = parse("docx", data)[0].text
    assert text.startswith("Handbook\n\nVacation policy: 25 days per year.")
    assert text.index("Remote work") < text.index("Plan | Price")
    assert "Basic | 10 EUR" in text


def test_docx_corrupt_and_mislabelled() -> None:
    with pytest.raises(InvalidDocument, match="not a ZIP"):
        precheck("docx", b"plain text named .docx")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(InvalidDocument, match=r"no word/document\.xml"):
        precheck("docx", buf.getvalue())
    with pytest.raises(InvalidDocument, match="corrupt DOCX"):
        precheck("docx", b"PK\x03\x04" + b"\x00" * 100)


@pytest.mark.parametrize(
    ("data", "archive"),
    [
        (b"PK\x03\x04rest", "zip"),
        (b"PK\x05\x06" + b"\x00" * 18, "zip"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"7z\xbc\xaf\x27\x1c\x00\x04", "7z"),
        (b"Rar!\x1a\x07\x01\x00", "rar"),
        (b"\xfd7zXZ\x00\x00", "xz"),
        (b"BZh91AY&SY\x00", "bzip2"),
        (b"\x28\xb5\x2f\xfd\x00", "zstd"),
        (b"name.txt".ljust(257, b"\x00") + b"ustar\x0000", "tar"),
        (b"BZh is how this text starts", None),
        (b"plain text", None),
    ],
)
def test_archive_content_is_recognised(data: bytes, archive: str | None) -> None:
    assert archive_type(data) == archive


@pytest.mark.parametrize("name", ["a.zip", "b.tar", "c.tar.gz", "d.tgz", "e.7z", "f.rar", "g.xz"])
def test_archive_extensions_are_refused(name: str) -> None:
    with pytest.raises(UnsupportedType, match="archives are not accepted"):
        detect_kind(name, None)


def test_archive_content_under_a_text_name_is_refused() -> None:
    with pytest.raises(UnsupportedType, match=r"^gzip archives are not accepted"):
        precheck("txt", b"\x1f\x8b\x08\x00" + b"x" * 100)


def test_pdf_page_limit() -> None:
    data = make_pdf(["one", "two", "three"])
    assert precheck("pdf", data, max_pdf_pages=3) == 3
    with pytest.raises(InvalidDocument, match=r"^the PDF has 3 pages; the limit is 2 \(MAX_PDF"):
        precheck("pdf", data, max_pdf_pages=2)


def test_extracted_text_limit() -> None:
    with pytest.raises(InvalidDocument, match="has 11 characters; the limit is 10"):
        parse("txt", b"0123456789a", max_chars=10)
    assert parse("txt", b"0123456789", max_chars=10)[0].text == "0123456789"
    # A PDF stops being read as soon as its text passes the limit.
    pdf = make_pdf(["x" * 50] * 3)
    with pytest.raises(InvalidDocument, match="exceeds 60 characters"):
        parse("pdf", pdf, max_chars=60)


def test_latin1_text_is_decoded_not_rejected() -> None:
    text = "Crème brûlée, façade, naïve garçon: déjà vu à Noël. " * 10
    assert parse("txt", text.encode("latin-1"))[0].text == text
