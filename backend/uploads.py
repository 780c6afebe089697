"""The write path of an upload: read the request's files (or JSON text), check each one, spool it
under DATA_DIR, and register it for ingestion.

Routes only translate HTTP; everything an upload costs and every limit it meets is decided here.
Failures are raised as HTTPException with the 4xx/5xx that names the field and the limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from backend.errors import TOO_DEEP, validation_detail
from backend.guards import BodyReadError, UploadGate, queue_full
from backend.ingest import isolate
from backend.ingest.parse import (
    ISOLATED_PRECHECK,
    InvalidDocument,
    UnsupportedType,
    detect_kind,
    precheck,
)
from backend.ingest.pipeline import Ingestor
from backend.mlapi import MLClient
from backend.registry import Document, DuplicateBeingDeleted, Registry, Status
from backend.schemas import Metadata, TextDocumentIn
from backend.settings import Settings
from backend.store import VectorStore
from ragstack_common.http import retry_after_header

_metadata_adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(Metadata)
MAX_FILENAME_CHARS = 255
SPOOL_RETRY_AFTER_S = 30.0
# A multipart form carries `files` and `metadata`; a few more fields are tolerated (clients add
# their own), and a non-file field (the metadata JSON) is small.
EXTRA_FORM_FIELDS = 8
MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Incoming:
    """One checked file of an upload request, waiting in a spool file to be registered."""

    filename: str | None
    kind: str
    metadata: dict[str, Any]
    size: int
    content_hash: str
    spooled: Path | None
    replaces: str | None = None


@dataclass
class Registered:
    """One file of an accepted upload: its document, and whether it was already known."""

    document: Document
    duplicate: bool
    replaces: str | None = None  # what this upload replaces (an explicit `replace`)


def clean_filename(name: str | None) -> str | None:
    """The client's filename is a label only (stored, shown, compared to find a new version of
    a file) and never part of a filesystem path; control characters are dropped."""
    if not name:
        return None
    cleaned = "".join(ch for ch in name if unicodedata.category(ch) != "Cc").strip()
    if len(cleaned) > MAX_FILENAME_CHARS:
        raise HTTPException(
            422, f"filename: at most {MAX_FILENAME_CHARS} characters (got {len(cleaned)})"
        )
    return cleaned or None


async def _read_upload(upload: UploadFile, label: str, limit: int) -> bytes:
    if upload.size is not None and upload.size > limit:
        raise HTTPException(
            413, f"{label}: file is {upload.size} bytes; the limit is {limit} (MAX_UPLOAD_BYTES)"
        )
    data = await upload.read()
    if len(data) > limit:
        raise HTTPException(
            413, f"{label}: file is {len(data)} bytes; the limit is {limit} (MAX_UPLOAD_BYTES)"
        )
    return data


def _hash_and_spool(data: bytes, path: Path) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


async def _accept(
    ingestor: Ingestor, filename: str | None, kind: str, data: bytes, metadata: dict[str, Any]
) -> Incoming:
    """Check one file (in a parser process when a native library must open it), then hash it
    and write it to a spool file. Raises the 4xx that names what is wrong."""
    label = filename or "text"
    try:
        if kind in ISOLATED_PRECHECK:
            await isolate.precheck(kind, data, ingestor.limits)
        else:
            await asyncio.to_thread(precheck, kind, data)
    except UnsupportedType as exc:
        raise HTTPException(415, f"{label}: {exc}") from None
    except InvalidDocument as exc:
        raise HTTPException(422, f"{label}: {exc}") from None
    path = ingestor.incoming_path()
    item = Incoming(filename, kind, metadata, len(data), "", path)
    try:
        item.content_hash = await asyncio.to_thread(_hash_and_spool, data, path)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise HTTPException(
            503,
            f"cannot store the upload under DATA_DIR ({exc.strerror or exc}); retry later",
            headers=retry_after_header(SPOOL_RETRY_AFTER_S),
        ) from None
    return item


def _parse_metadata(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        return _metadata_adapter.validate_python(json.loads(raw))
    except RecursionError:
        raise HTTPException(422, f"metadata: {TOO_DEEP}") from None
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"metadata: not valid JSON ({exc.msg})") from None
    except ValidationError as exc:
        raise HTTPException(422, validation_detail(exc.errors(), prefix="metadata")) from None


async def _from_multipart(
    request: Request, settings: Settings, ingestor: Ingestor, incoming: list[Incoming]
) -> None:
    max_files = settings.max_files_per_upload
    try:
        form = await request.form(
            max_files=max_files,
            max_fields=max_files + EXTRA_FORM_FIELDS,
            max_part_size=MAX_FIELD_BYTES,
        )
    except BodyReadError:
        raise
    except StarletteHTTPException as exc:  # starlette's limits and malformed bodies (not
        # fastapi.HTTPException, which is a subclass)
        raise _form_error(str(exc.detail), max_files) from None
    try:
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not uploads:
            raise HTTPException(
                422, "files: at least one file is required (multipart field `files`)"
            )
        metadata = _parse_metadata(form.get("metadata"))
        kinds = []
        for upload in uploads:  # every type first: a 415 should not wait for the other checks
            name = clean_filename(upload.filename)
            try:
                kinds.append((name, detect_kind(name, upload.content_type)))
            except UnsupportedType as exc:
                raise HTTPException(415, f"{name or 'upload'}: {exc}") from None
        for upload, (name, kind) in zip(uploads, kinds, strict=True):
            data = await _read_upload(upload, name or "upload", settings.max_upload_bytes)
            incoming.append(await _accept(ingestor, name, kind, data, metadata))
            del data  # one file in memory at a time
        replace = form.get("replace")
        if isinstance(replace, str) and replace.strip():
            if len(incoming) != 1:
                raise HTTPException(422, "replace: allowed with a single file only")
            incoming[0].replaces = replace.strip()
    finally:
        await form.close()


def _form_error(message: str, max_files: int) -> HTTPException:
    """Starlette's multipart limit messages -> 413 naming our limit; anything else is a 400."""
    if message.startswith("Too many files"):
        return HTTPException(
            413, f"multipart body: more than {max_files} files (MAX_FILES_PER_UPLOAD)"
        )
    if message.startswith("Too many fields"):
        return HTTPException(
            413,
            f"multipart body: more than {max_files + EXTRA_FORM_FIELDS} form fields"
            f" (MAX_FILES_PER_UPLOAD + {EXTRA_FORM_FIELDS})",
        )
    if "exceeded maximum size" in message:
        return HTTPException(
            413,
            f"multipart body: a form field other than a file is over {MAX_FIELD_BYTES} bytes"
            " (fixed limit; metadata is at most 32 short values)",
        )
    return HTTPException(400, f"multipart body: {message}")


async def _from_json(
    request: Request, settings: Settings, ingestor: Ingestor, incoming: list[Incoming]
) -> None:
    try:
        body = await request.json()
    except BodyReadError:
        raise
    except RecursionError:
        raise HTTPException(422, f"body: {TOO_DEEP}") from None
    except ValueError:
        raise HTTPException(422, "body: not valid JSON") from None
    try:
        doc = TextDocumentIn.model_validate(body)
    except ValidationError as exc:
        raise HTTPException(422, validation_detail(exc.errors())) from None
    data = doc.text.encode("utf-8")
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(
            413,
            f"text: {len(data)} bytes; the limit is {settings.max_upload_bytes} (MAX_UPLOAD_BYTES)",
        )
    title = clean_filename(doc.title)
    # A title like "notes.md" selects the Markdown splitter; anything else is plain text.
    kind = "md" if title and title.lower().endswith((".md", ".markdown")) else "txt"
    incoming.append(await _accept(ingestor, title, kind, data, doc.metadata))
    incoming[-1].replaces = doc.replace


def check_content_type(content_type: str) -> bool:
    """True for multipart, False for JSON; 415 for anything else."""
    content_type = content_type.lower()
    if content_type.startswith("multipart/form-data"):
        return True
    if content_type.startswith("application/json"):
        return False
    raise HTTPException(
        415,
        "send multipart/form-data with one or more `files`, or application/json "
        '{"text", "title", "metadata", "replace"}',
    )


async def receive(
    request: Request,
    *,
    settings: Settings,
    registry: Registry,
    ingestor: Ingestor,
    gate: UploadGate,
    ml: MLClient,
    store: VectorStore,
) -> list[Registered]:
    """Read, check, spool and register every file of one upload request, all or nothing."""
    multipart = check_content_type(request.headers.get("content-type", ""))
    incoming: list[Incoming] = []
    with gate.slot():
        if ingestor.full:
            raise queue_full(ingestor.pending, 1, settings.max_pending_documents)
        # Refused before the body is read: a document accepted now would only fail later.
        await ml.ensure_available()
        await store.ensure_available()
        try:
            if multipart:
                await _from_multipart(request, settings, ingestor, incoming)
            else:
                await _from_json(request, settings, ingestor, incoming)
            # All files are checked before any is registered: one bad file rejects the request.
            # The queue places are reserved without an await between check and reservation,
            # so concurrent uploads cannot pass MAX_PENDING_DOCUMENTS together.
            if ingestor.pending + len(incoming) > settings.max_pending_documents:
                raise queue_full(ingestor.pending, len(incoming), settings.max_pending_documents)
            for item in incoming:
                _check_replace(registry, item.replaces)
            with ingestor.reserve(len(incoming)) as reservation:
                registered = []
                for item in incoming:
                    registered.append(await _register(registry, ingestor, item))
                    reservation.release(1)  # now queued (or a duplicate): counted as such
                return registered
        finally:
            for item in incoming:
                if item.spooled is not None:
                    item.spooled.unlink(missing_ok=True)


def _check_replace(registry: Registry, doc_id: str | None) -> None:
    if doc_id is None:
        return
    old = registry.get(doc_id)
    if old is None or old.status == Status.DELETING:
        raise HTTPException(422, f"replace: no document {doc_id!r} to replace")


async def _register(registry: Registry, ingestor: Ingestor, item: Incoming) -> Registered:
    try:
        doc, needs_ingest = registry.add(
            content_hash=item.content_hash,
            filename=item.filename,
            kind=item.kind,
            size_bytes=item.size,
            metadata=item.metadata,
            replaces=item.replaces,
        )
    except DuplicateBeingDeleted:
        raise HTTPException(
            409, f"{item.filename}: identical content is being deleted right now; retry"
        ) from None
    if needs_ingest and item.spooled is not None:
        try:
            await ingestor.submit(doc.id, item.spooled)
        except OSError as exc:
            # Registered but not spooled: say so on the document rather than leave it queued.
            registry.mark_failed(doc.id, f"the upload could not be stored: {exc}")
            doc = registry.get(doc.id) or doc
        item.spooled = None
    replaces = doc.replaces
    if item.replaces and not needs_ingest and item.replaces != doc.id:
        # The content already exists under another id: that document takes the old one's
        # place, now if it is indexed, else when it is.
        replaces = item.replaces
        if doc.status == Status.INDEXED:
            await ingestor.delete(item.replaces)
        else:
            registry.update(doc.id, replaces=item.replaces)
    return Registered(doc, duplicate=not needs_ingest, replaces=replaces)
