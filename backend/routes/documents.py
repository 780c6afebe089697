"""Documents API: upload (files or JSON text), list, status, delete."""

from __future__ import annotations

import asyncio
import hashlib
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from backend.deps import IngestorDep, MLDep, RegistryDep, SettingsDep, StoreDep, UploadGateDep
from backend.errors import retry_after, validation_detail
from backend.guards import BodyTooLarge, queue_full
from backend.ingest import isolate
from backend.ingest.parse import (
    ISOLATED_PRECHECK,
    InvalidDocument,
    UnsupportedType,
    detect_kind,
    precheck,
)
from backend.ingest.pipeline import Ingestor
from backend.registry import DuplicateBeingDeleted, Registry, Status
from backend.schemas import (
    REPLACE_DOC,
    DocumentAccepted,
    DocumentList,
    DocumentOut,
    Metadata,
    TextDocumentIn,
    UploadResponse,
)
from backend.settings import Settings
from backend.store import StoreError

router = APIRouter(prefix="/documents", tags=["documents"])

_metadata_adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(Metadata)
MAX_FILENAME_CHARS = 255
SPOOL_RETRY_AFTER_S = 30.0
DocId = Annotated[str, Path(max_length=64, description="Document id")]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more files: txt, md, pdf, html, docx.",
                        },
                        "metadata": {
                            "type": "string",
                            "description": "JSON object of metadata applied to every file.",
                        },
                        "replace": {
                            "type": "string",
                            "description": REPLACE_DOC + " Only with a single file.",
                        },
                    },
                }
            },
            "application/json": {"schema": TextDocumentIn.model_json_schema()},
        },
    }
}


@dataclass
class Incoming:
    """One checked file of an upload request, waiting in a spool file to be registered."""

    filename: str | None
    kind: str
    metadata: dict[str, Any]
    size: int
    content_hash: str
    spooled: FsPath | None
    replaces: str | None = None


def _status_url(request: Request, doc_id: str) -> str:
    return str(request.url_for("get_document", doc_id=doc_id).path)


def _clean_filename(name: str | None) -> str | None:
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


def _hash_and_spool(data: bytes, path: FsPath) -> str:
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
            headers=retry_after(SPOOL_RETRY_AFTER_S),
        ) from None
    return item


def _parse_metadata(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        return _metadata_adapter.validate_python(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"metadata: not valid JSON ({exc.msg})") from None
    except ValidationError as exc:
        raise HTTPException(422, validation_detail(exc.errors(), prefix="metadata")) from None


async def _from_multipart(
    request: Request, settings: Settings, ingestor: Ingestor, incoming: list[Incoming]
) -> None:
    try:
        form = await request.form(
            max_files=settings.max_files_per_upload, max_fields=settings.max_files_per_upload + 8
        )
    except BodyTooLarge:
        raise
    except HTTPException as exc:  # starlette's own limits and malformed bodies
        status = 413 if "Too many" in str(exc.detail) else 400
        detail = f"multipart body: {exc.detail}"
        if status == 413:
            detail += f" (MAX_FILES_PER_UPLOAD={settings.max_files_per_upload})"
        raise HTTPException(status, detail) from None
    try:
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not uploads:
            raise HTTPException(
                422, "files: at least one file is required (multipart field `files`)"
            )
        metadata = _parse_metadata(form.get("metadata"))
        kinds = []
        for upload in uploads:  # every type first: a 415 should not wait for the other checks
            name = _clean_filename(upload.filename)
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


async def _from_json(
    request: Request, settings: Settings, ingestor: Ingestor, incoming: list[Incoming]
) -> None:
    try:
        body = await request.json()
    except BodyTooLarge:
        raise
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
    title = _clean_filename(doc.title)
    # A title like "notes.md" selects the Markdown splitter; anything else is plain text.
    kind = "md" if title and title.lower().endswith((".md", ".markdown")) else "txt"
    incoming.append(await _accept(ingestor, title, kind, data, doc.metadata))
    incoming[-1].replaces = doc.replace


@router.post(
    "",
    status_code=202,
    response_model=UploadResponse,
    summary="Upload files (multipart `files`) or JSON text; ingestion runs in the background",
    openapi_extra=_UPLOAD_BODY,
    responses={
        413: {"description": "A file or the request is larger than its limit"},
        415: {"description": "Unsupported file type (archives included)"},
        422: {"description": "Empty, corrupt or mislabelled file, or invalid fields"},
        429: {"description": "Too many uploads at once or the ingestion queue is full"},
        503: {"description": "The ml-api or Qdrant is unavailable"},
    },
)
async def upload_documents(
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    ingestor: IngestorDep,
    gate: UploadGateDep,
    ml: MLDep,
    store: StoreDep,
) -> JSONResponse:
    content_type = request.headers.get("content-type", "").lower()
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith("application/json"):
        raise HTTPException(
            415,
            "send multipart/form-data with one or more `files`, or application/json "
            '{"text", "title", "metadata"}',
        )
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
            if ingestor.pending + len(incoming) > settings.max_pending_documents:
                raise queue_full(ingestor.pending, len(incoming), settings.max_pending_documents)
            for item in incoming:
                _check_replace(registry, item.replaces)
            accepted = [await _register(request, registry, ingestor, item) for item in incoming]
        finally:
            for item in incoming:
                if item.spooled is not None:
                    item.spooled.unlink(missing_ok=True)
    headers = {"Location": accepted[0].status_url} if len(accepted) == 1 else None
    return JSONResponse(
        UploadResponse(documents=accepted).model_dump(), status_code=202, headers=headers
    )


def _check_replace(registry: Registry, doc_id: str | None) -> None:
    if doc_id is None:
        return
    old = registry.get(doc_id)
    if old is None or old.status == Status.DELETING:
        raise HTTPException(422, f"replace: no document {doc_id!r} to replace")


async def _register(
    request: Request, registry: Registry, ingestor: Ingestor, item: Incoming
) -> DocumentAccepted:
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
    return DocumentAccepted(
        id=doc.id,
        filename=doc.filename,
        status=doc.status.value,
        status_url=_status_url(request, doc.id),
        duplicate=not needs_ingest,
        replaces=replaces,
    )


@router.get("", response_model=DocumentList, summary="List documents, newest first")
async def list_documents(
    registry: RegistryDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: Annotated[Status | None, Query(description="Only documents in this state")] = None,
) -> DocumentList:
    docs, total = registry.list(limit=limit, offset=offset, status=status)
    following = offset + len(docs)
    return DocumentList(
        documents=[DocumentOut.of(d) for d in docs],
        total=total,
        limit=limit,
        offset=offset,
        next_offset=following if following < total else None,
    )


@router.get(
    "/{doc_id}",
    name="get_document",
    response_model=DocumentOut,
    summary="Status, progress and details of one document",
    responses={404: {"description": "No such document"}},
)
async def get_document(doc_id: DocId, registry: RegistryDep, store: StoreDep) -> DocumentOut:
    doc = registry.get(doc_id)
    if doc is None or doc.status == Status.DELETING:
        raise HTTPException(404, f"document {doc_id} not found")
    try:
        stored = await store.count(doc_id)
    except StoreError:
        stored = None  # the registry view is still worth answering
    return DocumentOut.of(doc, chunks_stored=stored)


@router.delete(
    "/{doc_id}",
    status_code=204,
    summary="Delete a document and all its chunks",
    responses={404: {"description": "No such document"}},
)
async def delete_document(doc_id: DocId, ingestor: IngestorDep) -> Response:
    if not await ingestor.delete(doc_id):
        raise HTTPException(404, f"document {doc_id} not found")
    return Response(status_code=204)
