"""Documents API: upload (files or JSON text), list, status, delete."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from backend.deps import IngestorDep, RegistryDep, SettingsDep, StoreDep
from backend.errors import validation_detail
from backend.ingest.parse import InvalidDocument, UnsupportedType, detect_kind, precheck
from backend.registry import DuplicateBeingDeleted, Status
from backend.schemas import (
    DocumentAccepted,
    DocumentList,
    DocumentOut,
    Metadata,
    TextDocumentIn,
    UploadResponse,
)
from backend.store import StoreError

router = APIRouter(prefix="/documents", tags=["documents"])

_metadata_adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(Metadata)
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
                    },
                }
            },
            "application/json": {"schema": TextDocumentIn.model_json_schema()},
        },
    }
}


@dataclass
class Incoming:
    filename: str | None
    kind: str
    data: bytes
    metadata: dict[str, Any]


def _status_url(request: Request, doc_id: str) -> str:
    return str(request.url_for("get_document", doc_id=doc_id).path)


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    name = upload.filename or "upload"
    if upload.size is not None and upload.size > limit:
        raise HTTPException(413, f"{name}: file is {upload.size} bytes; the limit is {limit}")
    data = await upload.read()
    if len(data) > limit:
        raise HTTPException(413, f"{name}: file is {len(data)} bytes; the limit is {limit}")
    return data


async def _from_multipart(request: Request, settings: SettingsDep) -> list[Incoming]:
    try:
        form = await request.form(
            max_files=settings.max_files_per_upload, max_fields=settings.max_files_per_upload + 8
        )
    except HTTPException as exc:  # starlette's own limits and malformed bodies
        raise HTTPException(
            413 if "Too many" in str(exc.detail) else 400, f"multipart body: {exc.detail}"
        ) from None
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not uploads:
        raise HTTPException(422, "files: at least one file is required (multipart field `files`)")
    metadata: dict[str, Any] = {}
    raw_meta = form.get("metadata")
    if isinstance(raw_meta, str) and raw_meta.strip():
        try:
            metadata = _metadata_adapter.validate_python(json.loads(raw_meta))
        except json.JSONDecodeError as exc:
            raise HTTPException(422, f"metadata: not valid JSON ({exc.msg})") from None
        except ValidationError as exc:
            raise HTTPException(422, validation_detail(exc.errors(), prefix="metadata")) from None

    incoming = []
    for upload in uploads:
        name = upload.filename or None
        label = name or "upload"
        try:
            kind = detect_kind(name, upload.content_type)
        except UnsupportedType as exc:
            raise HTTPException(415, f"{label}: {exc}") from None
        data = await _read_upload(upload, settings.max_upload_bytes)
        incoming.append(Incoming(name, kind, data, metadata))
    return incoming


async def _from_json(request: Request, settings: SettingsDep) -> list[Incoming]:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(422, "body: not valid JSON") from None
    try:
        doc = TextDocumentIn.model_validate(body)
    except ValidationError as exc:
        raise HTTPException(422, validation_detail(exc.errors())) from None
    data = doc.text.encode("utf-8")
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(
            413, f"text: {len(data)} bytes; the limit is {settings.max_upload_bytes}"
        )
    # A title like "notes.md" selects the Markdown splitter; anything else is plain text.
    kind = "md" if doc.title and doc.title.lower().endswith((".md", ".markdown")) else "txt"
    return [Incoming(doc.title, kind, data, doc.metadata)]


def _check_and_hash(item: Incoming) -> str:
    """Cheap validity checks, then the content hash (both CPU work: run in a thread)."""
    precheck(item.kind, item.data)
    return hashlib.sha256(item.data).hexdigest()


@router.post(
    "",
    status_code=202,
    response_model=UploadResponse,
    summary="Upload files (multipart `files`) or JSON text; ingestion runs in the background",
    openapi_extra=_UPLOAD_BODY,
    responses={
        413: {"description": "A file is larger than MAX_UPLOAD_BYTES"},
        415: {"description": "Unsupported file type"},
        422: {"description": "Empty, corrupt or mislabelled file, or invalid fields"},
    },
)
async def upload_documents(
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    ingestor: IngestorDep,
) -> JSONResponse:
    content_type = request.headers.get("content-type", "").lower()
    # Refuse an obviously oversized body before spooling it to disk.
    declared = int(request.headers.get("content-length") or 0)
    ceiling = settings.max_upload_bytes * settings.max_files_per_upload + 1024 * 1024
    if declared > ceiling:
        raise HTTPException(413, f"request body is {declared} bytes; the limit is {ceiling}")
    if content_type.startswith("multipart/form-data"):
        incoming = await _from_multipart(request, settings)
    elif content_type.startswith("application/json"):
        incoming = await _from_json(request, settings)
    else:
        raise HTTPException(
            415,
            "send multipart/form-data with one or more `files`, or application/json "
            '{"text", "title", "metadata"}',
        )

    # All files are checked before any is registered: one bad file rejects the whole request.
    hashes = []
    for item in incoming:
        try:
            hashes.append(await asyncio.to_thread(_check_and_hash, item))
        except InvalidDocument as exc:
            raise HTTPException(422, f"{item.filename or 'text'}: {exc}") from None

    accepted = []
    for item, content_hash in zip(incoming, hashes, strict=True):
        try:
            doc, needs_ingest = registry.add(
                content_hash=content_hash,
                filename=item.filename,
                kind=item.kind,
                size_bytes=len(item.data),
                metadata=item.metadata,
            )
        except DuplicateBeingDeleted:
            raise HTTPException(
                409, f"{item.filename}: identical content is being deleted right now; retry"
            ) from None
        if needs_ingest:
            await ingestor.submit(doc.id, item.data)
        accepted.append(
            DocumentAccepted(
                id=doc.id,
                filename=doc.filename,
                status=doc.status.value,
                status_url=_status_url(request, doc.id),
                duplicate=not needs_ingest,
            )
        )
    headers = {"Location": accepted[0].status_url} if len(accepted) == 1 else None
    return JSONResponse(
        UploadResponse(documents=accepted).model_dump(), status_code=202, headers=headers
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
