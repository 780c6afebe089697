"""Per-format parsers: bytes in, a list of pages of plain text out.

`detect_kind` and `precheck` are the checks the upload route runs before accepting a file (type,
archive and binary content, empty, PDF page count); `parse` is the full extraction. Both run in a
separate parser process for PDF and DOCX (see isolate.py), so PDFium or lxml meeting a hostile file
cannot crash or bloat the server. Every failure is an `InvalidDocument` (HTTP 422 / `failed`) or
`UnsupportedType` (HTTP 415) whose message says what is wrong, for the client.
"""

from __future__ import annotations

import codecs
import io
import re
import threading
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from backend.ingest import htmldepth

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
# Archives are refused, never expanded: by extension here, by content in `archive_type`.
ARCHIVE_EXTENSIONS = {
    ".zip": "zip",
    ".tar": "tar",
    ".gz": "gzip",
    ".tgz": "gzip",
    ".bz2": "bzip2",
    ".tbz2": "bzip2",
    ".xz": "xz",
    ".txz": "xz",
    ".zst": "zstd",
    ".7z": "7z",
    ".rar": "rar",
}

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
        if ext in ARCHIVE_EXTENSIONS:
            raise UnsupportedType(_archive_message(ARCHIVE_EXTENSIONS[ext]))
        raise UnsupportedType(f"unsupported file type {ext!r}; supported: {SUPPORTED}")
    media = (content_type or "").split(";")[0].strip().lower()
    if media in MEDIA_TYPES:
        return MEDIA_TYPES[media]
    raise UnsupportedType(
        f"cannot tell the file type (no extension, content type {media or 'missing'!r});"
        f" supported: {SUPPORTED}"
    )


def _archive_message(archive: str) -> str:
    return (
        f"{archive} archives are not accepted (archives are never expanded); upload the files"
        f" inside it; supported: {SUPPORTED}"
    )


def archive_type(data: bytes) -> str | None:
    """The archive or compression format the content starts with, if any."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if data.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if data.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if re.match(rb"BZh[1-9]1AY&SY", data[:10]):
        return "bzip2"
    if data[257:262] == b"ustar":
        return "tar"
    return None


# -- checks before accepting -----------------------------------------------------------------------

# Kinds whose check opens the file with a native library: the upload route runs it isolated.
ISOLATED_PRECHECK = frozenset({"pdf", "docx"})


def precheck(kind: str, data: bytes, *, max_pdf_pages: int | None = None) -> int | None:
    """Reject what can be rejected without a full parse. Returns the page count when known."""
    if not data:
        raise InvalidDocument("the file is empty")
    archive = archive_type(data)
    # A DOCX is a ZIP container; every other archive or compressed stream is refused.
    if archive is not None and not (kind == "docx" and archive == "zip"):
        raise UnsupportedType(_archive_message(archive))
    if kind == "pdf":
        return _precheck_pdf(data, max_pdf_pages)
    if kind == "docx":
        _precheck_docx(data)
        return None
    _check_not_binary(data)
    if data.isspace():
        raise InvalidDocument("the file has no text (only whitespace)")
    # Tags are ASCII in every encoding but UTF-16/32 (which the parser re-checks after decoding).
    if kind == "html" and htmldepth.too_deep(data.decode("latin-1")):
        raise InvalidDocument(htmldepth.message())
    return None


_TEXT_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _check_not_binary(data: bytes) -> None:
    head = data[:8192]
    for magic, what in ((b"%PDF-", "a PDF"), (b"\x7fELF", "ELF")):
        if head.startswith(magic):
            raise InvalidDocument(f"binary content in a text file (looks like {what})")
    utf16 = head.startswith(_TEXT_BOMS[1:]) or head.startswith(codecs.BOM_UTF32_LE)
    if not utf16 and b"\x00" in head:
        raise InvalidDocument("binary content in a text file (NUL bytes)")


def _precheck_pdf(data: bytes, max_pages: int | None) -> int:
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
    if max_pages is not None and pages > max_pages:
        raise InvalidDocument(
            f"the PDF has {pages} pages; the limit is {max_pages} (MAX_PDF_PAGES)"
        )
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


def too_much_text(chars: int | None, limit: int) -> str:
    got = f"has {chars} characters" if chars is not None else f"exceeds {limit} characters"
    return f"the extracted text {got}; the limit is {limit} (MAX_EXTRACTED_CHARS)"


def parse(
    kind: str, data: bytes, *, max_pdf_pages: int | None = None, max_chars: int | None = None
) -> list[Page]:
    """Extract text pages. Raises InvalidDocument when the file is corrupt, has no text, or
    breaks a limit. Run it through isolate.py, not in the server process."""
    precheck(kind, data, max_pdf_pages=max_pdf_pages)
    try:
        pages = _parse_pdf(data, max_chars) if kind == "pdf" else _PARSERS[kind](data)
    except (InvalidDocument, MemoryError):
        raise
    except Exception as exc:  # any parser library error is a property of the file
        raise InvalidDocument(f"cannot parse the {kind.upper()} file: {exc}") from None
    if max_chars is not None:
        chars = sum(len(p.text) for p in pages)
        if chars > max_chars:
            raise InvalidDocument(too_much_text(chars, max_chars))
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


# charset-normalizer often ranks a Baltic or Central European code page a little above
# Windows-1252 for Western text ("Crème" read as "Crčme"); within this margin of chaos the far more
# common Windows-1252 wins.
CP1252_MARGIN = 0.15


def _detect_and_decode(data: bytes) -> str:
    import charset_normalizer  # only here: it slows down every parser process's start

    matches = list(charset_normalizer.from_bytes(data))
    if matches:
        least = min(m.chaos for m in matches)
        close = [m for m in matches if m.chaos <= least + CP1252_MARGIN]
        western = [m for m in close if m.encoding == "cp1252"]
        chosen = western[0] if western else next(m for m in matches if m.chaos == least)
        return str(chosen)
    # Nothing plausible: read it as Windows-1252 (Latin-1 where that leaves a byte undefined); the
    # control-character check that follows still rejects binary content.
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


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


def _parse_pdf(data: bytes, max_chars: int | None = None) -> list[Page]:
    import pypdfium2

    pages: list[Page] = []
    chars = 0
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
                chars += len(text)
                # Stop early: the rest of a huge PDF would only be thrown away.
                if max_chars is not None and chars > max_chars:
                    raise InvalidDocument(too_much_text(None, max_chars))
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

    text = decode_text(data)
    if htmldepth.too_deep(text):  # the parser's cost grows with depth squared
        raise InvalidDocument(htmldepth.message())
    tree = LexborHTMLParser(text)
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


_PARSERS: dict[str, Callable[[bytes], list[Page]]] = {
    "txt": _parse_text,
    "md": _parse_text,
    "pdf": _parse_pdf,
    "html": _parse_html,
    "docx": _parse_docx,
}
