"""Request and response models of the backend API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from backend.registry import Document
from backend.settings import MAX_QUERY_CHARS

MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
# bool first: in smart mode pydantic keeps exact types anyway, but the order documents intent.
MetadataValue = bool | int | float | Annotated[str, StringConstraints(max_length=1000)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=32)]


class Strict(BaseModel):
    # Unknown fields are an error, so a typo ("topk") is reported instead of ignored.
    model_config = ConfigDict(extra="forbid")


# -- documents -------------------------------------------------------------------------------------


class TextDocumentIn(Strict):
    text: Annotated[str, Field(min_length=1, description="The document's text (plain text).")]
    title: Annotated[str | None, Field(max_length=255, description="Shown as filename.")] = None
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain non-whitespace text")
        return value


class DocumentAccepted(BaseModel):
    id: str
    filename: str | None
    status: str
    status_url: str
    duplicate: bool = Field(description="True when identical content was already registered.")


class UploadResponse(BaseModel):
    documents: list[DocumentAccepted]


class Progress(BaseModel):
    chunks_done: int
    chunks_total: int | None


class DocumentOut(BaseModel):
    id: str
    filename: str | None
    kind: str
    status: Literal["queued", "parsing", "embedding", "indexed", "failed", "deleting"]
    error: str | None
    progress: Progress
    content_hash: str
    size_bytes: int
    pages: int | None
    chunk_count: int | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    indexed_at: str | None
    chunks_stored: int | None = Field(
        None, description="Points in Qdrant for this document right now (single-document GET)."
    )

    @classmethod
    def of(cls, doc: Document, chunks_stored: int | None = None) -> DocumentOut:
        return cls(
            id=doc.id,
            filename=doc.filename,
            kind=doc.kind,
            status=doc.status.value,
            error=doc.error,
            progress=Progress(chunks_done=doc.chunks_done, chunks_total=doc.chunks_total),
            content_hash=doc.content_hash,
            size_bytes=doc.size_bytes,
            pages=doc.pages,
            chunk_count=doc.chunk_count,
            metadata=doc.metadata,
            created_at=doc.created_at,
            updated_at=doc.updated_at,
            indexed_at=doc.indexed_at,
            chunks_stored=chunks_stored,
        )


class DocumentList(BaseModel):
    documents: list[DocumentOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


# -- query -----------------------------------------------------------------------------------------


FilterValue = MetadataValue | Annotated[list[MetadataValue], Field(min_length=1, max_length=100)]


class Filters(Strict):
    document_ids: Annotated[list[str] | None, Field(max_length=1000)] = None
    metadata: Annotated[dict[MetadataKey, FilterValue] | None, Field(max_length=32)] = None


class QueryIn(Strict):
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
    top_k: Annotated[int | None, Field(ge=1, le=100)] = None
    rerank: bool = True
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(
        None, description="Retrieval mode; default: the SEARCH_MODE setting (hybrid)."
    )
    filters: Filters | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain non-whitespace text")
        return value


class QueryResult(BaseModel):
    text: str
    score: float = Field(description="rerank_score when reranked, else vector_score.")
    vector_score: float = Field(
        description="Retrieval score: cosine (dense), BM25 (sparse) or the fusion score (hybrid)."
    )
    rerank_score: float | None
    document_id: str
    filename: str | None
    metadata: dict[str, Any]
    page: int | None
    start: int
    end: int
    chunk_index: int


class Timings(BaseModel):
    embed: float
    search: float
    rerank: float
    total: float


class QueryOut(BaseModel):
    results: list[QueryResult]
    reranked: bool
    mode: Literal["dense", "sparse", "hybrid"]
    timings_ms: Timings
