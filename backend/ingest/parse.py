"""Per-format parsers: bytes in, a list of pages of plain text out.

`detect_kind` and `precheck` are the cheap checks the upload route runs synchronously (type,
magic bytes, binary content, empty); `parse` is the full extraction the pipeline runs in a worker
thread. Every failure is an `InvalidDocument` whose message says what is wrong, for the client.
"""

from __future__ import annotations

import codecs
import io
import re
import threading
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import PurePath

import charset_normalizer

# Extension -> kind. The kind decides the parser and the splitter.
EXTENSIONS = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".docx": "docx",
}
DOCX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
# Used only when the filename has no extension.
MEDIA_TYPES = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "application/pdf": "pdf",
    "text/html": "html",
    DOCX_MEDIA_TYPE: "docx",
}
SUPPORTED = "txt, md, pdf, html, docx"

# A DOCX whose parts unpack to more than this is refused (zip bomb guard).
MAX_DOCX_UNPACKED = 512 * 1024 * 1024
# HTML elements whose text is not content.
HTML_DROP = ["script", "style", "nav", "noscript", "template", "svg", "iframe", "head"]
HTML_BLOCKS = (
    "p, div, section, article, main, header, footer, aside, h1, h2, h3, h4, h5, h6, li, dt, dd,"
    " tr, table, blockquote, pre, ul, ol, dl, figure, figcaption, hr, br, form, fieldset, address,"
    " details, summary, caption"
)
HTML_CELLS = "td, th"

# PDFium is not thread-safe: every call into it holds this lock.
PDFIUM_LOCK = threading.Lock()


class UnsupportedType(Exception):
    """The file type is not one we parse (HTTP 415)."""


class InvalidDocument(Exception):
    """The file is corrupt, empty or not what its extension says (HTTP 422 / failed)."""


@dataclass(frozen=True)
class Page:
    number: int | None  # 1-based for paged formats (PDF), None otherwise
    text: str


def detect_kind(filename: str | None, content_type: str | None) -> str:
    ext = PurePath(filename or "").suffix.lower()
    if ext:
        if ext in EXTENSIONS:
            return EXTENSIONS[ext]
        raise UnsupportedType(f"unsupported file type {ext!r}; supported: {SUPPORTED}")
    media = (content_type or "").split(";")[0].strip().lower()
    if media in MEDIA_TYPES:
        return MEDIA_TYPES[media]
    raise UnsupportedType(
        f"cannot tell the file type (no extension, content type {media or 'missing'!r});"
        f" supported: {SUPPORTED}"
    )


# -- cheap checks ----------------------------------------------------------------------------------


def precheck(kind: str, data: bytes) -> int | None:
    """Reject what can be rejected without a full parse. Returns the page count when known.
    PDFs are opened (PDFium reads only the cross-reference table), so run this in a thread."""
    if not data:
        raise InvalidDocument("the file is empty")
    if kind == "pdf":
        return _precheck_pdf(data)
    if kind == "docx":
        _precheck_docx(data)
        return None
    _check_not_binary(data)
    if not data.strip():
        raise InvalidDocument("the file has no text (only whitespace)")
    return None


_TEXT_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _check_not_binary(data: bytes) -> None:
    head = data[:8192]
    for magic, what in ((b"%PDF-", "a PDF"), (b"PK\x03\x04", "a ZIP/DOCX"), (b"\x7fELF", "ELF")):
        if head.startswith(magic):
            raise InvalidDocument(f"binary content in a text file (looks like {what})")
    utf16 = head.startswith(_TEXT_BOMS[1:]) or head.startswith(codecs.BOM_UTF32_LE)
    if not utf16 and b"\x00" in head:
        raise InvalidDocument("binary content in a text file (NUL bytes)")


def _precheck_pdf(data: bytes) -> int:
    if b"%PDF-" not in data[:1024]:
        raise InvalidDocument("not a PDF (no %PDF- header)")
    import pypdfium2

    with PDFIUM_LOCK:
        try:
            pdf = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError as exc:
            raise InvalidDocument(f"cannot open the PDF: {_pdfium_reason(exc)}") from None
        try:
            pages = len(pdf)
        finally:
            pdf.close()
    if pages == 0:
        raise InvalidDocument("the PDF has no pages")
    return pages


def _pdfium_reason(exc: Exception) -> str:
    text = str(exc)
    if "password" in text.lower():
        return "it is encrypted (password protected)"
    match = re.search(r"PDFium: ([^)]*)", text)
    return (match.group(1) if match else text).lower()


def _precheck_docx(data: bytes) -> None:
    if not data.startswith(b"PK\x03\x04"):
        raise InvalidDocument("not a DOCX (not a ZIP container)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidDocument(f"corrupt DOCX ({exc})") from None
    names = {i.filename for i in infos}
    if "word/document.xml" not in names:
        raise InvalidDocument("not a DOCX (no word/document.xml; is it another Office format?)")
    if sum(i.file_size for i in infos) > MAX_DOCX_UNPACKED:
        raise InvalidDocument("the DOCX unpacks to more than 512 MiB")


# -- full parsing ----------------------------------------------------------------------------------


def parse(kind: str, data: bytes) -> list[Page]:
    """Extract text pages. Raises InvalidDocument when the file is corrupt or has no text."""
    precheck(kind, data)
    try:
        pages = _PARSERS[kind](data)
    except InvalidDocument:
        raise
    except Exception as exc:  # any parser library error is a property of the file
        raise InvalidDocument(f"cannot parse the {kind.upper()} file: {exc}") from None
    if not any(p.text.strip() for p in pages):
        hint = " (a scanned PDF without a text layer?)" if kind == "pdf" else ""
        raise InvalidDocument(f"no extractable text{hint}")
    return pages


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM) first; otherwise let charset-normalizer detect the encoding."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = _detect_and_decode(data)
    text = text.lstrip("\ufeff")
    _check_text_is_text(text)
    return normalize_newlines(text)


def _detect_and_decode(data: bytes) -> str:
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        raise InvalidDocument("binary content or unknown text encoding")
    # Short texts often tie between code pages (cp1250 vs cp1252 read French differently);
    # on a tie take Windows-1252, by far the most common legacy encoding of Western text.
    least = min(m.chaos for m in matches)
    tied = [m for m in matches if m.chaos == least]
    chosen = next((m for m in tied if m.encoding == "cp1252"), tied[0])
    return str(chosen)


def _check_text_is_text(text: str) -> None:
    # Random bytes decode "successfully" as some single-byte code page; what gives them away is
    # a high share of control characters.
    sample = text[:20000]
    if not sample:
        return
    controls = sum(
        1 for ch in sample if ch not in "\t\n\r\f\v" and unicodedata.category(ch) == "Cc"
    )
    if controls / len(sample) > 0.01:
        raise InvalidDocument("binary content in a text file (control characters)")


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _parse_text(data: bytes) -> list[Page]:
    return [Page(None, decode_text(data))]


def _parse_pdf(data: bytes) -> list[Page]:
    import pypdfium2

    pages: list[Page] = []
    with PDFIUM_LOCK:
        try:
            pdf = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError as exc:
            raise InvalidDocument(f"cannot open the PDF: {_pdfium_reason(exc)}") from None
        try:
            for i in range(len(pdf)):
                page = pdf[i]
                textpage = page.get_textpage()
                try:
                    raw = textpage.get_text_range()
                finally:
                    textpage.close()
                    page.close()
                # PDFium marks soft hyphens at line ends with \x02 / \ufffe.
                text = normalize_newlines(raw).replace("\x02", "").replace("\ufffe", "")
                pages.append(Page(i + 1, text))
        finally:
            pdf.close()
    return pages


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def tidy_whitespace(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _parse_html(data: bytes) -> list[Page]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(decode_text(data))
    for node in tree.css(", ".join(HTML_DROP)):
        node.decompose()
    # Text nodes are joined without separators, so block boundaries become line breaks and
    # table cells get a separator; otherwise "<p>a</p><p>b</p>" would read "ab".
    for node in tree.css(HTML_BLOCKS):
        node.insert_after("\n")
        node.insert_before("\n")
    for node in tree.css(HTML_CELLS):
        node.insert_after(" | ")
    root = tree.body or tree.root
    text = root.text(deep=True, separator="", strip=False) if root is not None else ""
    text = tidy_whitespace(text)
    # Drop the trailing separator a row's last cell left behind.
    text = re.sub(r"\s*\|\s*$", "", text, flags=re.MULTILINE)
    return [Page(None, text)]


def _parse_docx(data: bytes) -> list[Page]:
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            rows = []
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:
                    text = " ".join(cell.text.split())
                    # Merged cells repeat the same cell object's text: keep it once.
                    if text and (not cells or cells[-1] != text):
                        cells.append(text)
                if cells:
                    rows.append(" | ".join(cells))
            if rows:
                blocks.append("\n".join(rows))
        else:
            text = block.text.strip()
            if text:
                blocks.append(text)
    return [Page(None, normalize_newlines("\n\n".join(blocks)))]


_PARSERS = {
    "txt": _parse_text,
    "md": _parse_text,
    "pdf": _parse_pdf,
    "html": _parse_html,
    "docx": _parse_docx,
}
