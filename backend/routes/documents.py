"""Documents API: upload (files or JSON text), list, status, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from backend import uploads
from backend.deps import IngestorDep, MLDep, RegistryDep, SettingsDep, StoreDep, UploadGateDep
from backend.registry import Status
from backend.schemas import (
    REPLACE_DOC,
    DocumentAccepted,
    DocumentList,
    DocumentOut,
    TextDocumentIn,
    UploadResponse,
)
from backend.store import StoreError

router = APIRouter(prefix="/documents", tags=["documents"])

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
                            "minItems": 1,
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


def _status_url(request: Request, doc_id: str) -> str:
    return str(request.url_for("get_document", doc_id=doc_id).path)


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
    registered = await uploads.receive(
        request,
        settings=settings,
        registry=registry,
        ingestor=ingestor,
        gate=gate,
        ml=ml,
        store=store,
    )
    accepted = [
        DocumentAccepted(
            id=r.document.id,
            filename=r.document.filename,
            status=r.document.status.value,
            status_url=_status_url(request, r.document.id),
            duplicate=r.duplicate,
            replaces=r.replaces,
        )
        for r in registered
    ]
    headers = {"Location": accepted[0].status_url} if len(accepted) == 1 else None
    return JSONResponse(
        UploadResponse(documents=accepted).model_dump(), status_code=202, headers=headers
    )


@router.get("", response_model=DocumentList, summary="List documents, newest first")
async def list_documents(
    registry: RegistryDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    # Bounded so SQLite's 64-bit OFFSET cannot overflow (a 500); 2**53 is also JSON-safe.
    offset: Annotated[int, Query(ge=0, le=2**53)] = 0,
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
