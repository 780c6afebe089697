"""Request and response models of the backend API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from backend.registry import Document
from backend.settings import MAX_QUERY_CHARS

MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
# bool first: in smart mode pydantic keeps exact types anyway, but the order documents intent.
# NaN and Infinity are refused: JSON has no such numbers and they would come back as null.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
MetadataValue = bool | int | FiniteFloat | Annotated[str, StringConstraints(max_length=1000)]
# Keys outside the pattern are refused: say so (pydantic documents only `patternProperties`).
KEYS_BY_PATTERN_ONLY = {"additionalProperties": False}
Metadata = Annotated[
    dict[MetadataKey, MetadataValue], Field(max_length=32, json_schema_extra=KEYS_BY_PATTERN_ONLY)
]
MAX_CONTEXT = 5  # neighbouring chunks each side a query may ask for


REPLACE_DOC = (
    "Id of an existing document this upload replaces: the old one is deleted once the new one "
    "is indexed. Without it, an upload never replaces anything (same names included)."
)


class Strict(BaseModel):
    # Unknown fields are an error, so a typo ("topk") is reported instead of ignored.
    model_config = ConfigDict(extra="forbid")


# -- documents -------------------------------------------------------------------------------------


class TextDocumentIn(Strict):
    text: Annotated[
        str,
        Field(
            min_length=1,
            description="The document's text (plain text: not blank, no NUL bytes).",
            # What the validator below and the parser check, said in the schema for clients
            # and fuzzers (a NUL byte marks binary content: 422).
            json_schema_extra={"pattern": r"^[^\u0000]*[^\u0000\s][^\u0000]*$"},
        ),
    ]
    title: Annotated[str | None, Field(max_length=255, description="Shown as filename.")] = None
    metadata: Metadata = Field(default_factory=dict)
    replace: Annotated[str | None, Field(max_length=64, description=REPLACE_DOC)] = None

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
    replaces: str | None = Field(
        None, description="The document this one replaces (deleted once this one is indexed)."
    )


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
    replaces: str | None = Field(
        None, description="The document this one replaces once indexed (upload's `replace`)."
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
            replaces=doc.replaces,
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
    metadata: (
        Annotated[
            dict[MetadataKey, FilterValue],
            Field(max_length=32, json_schema_extra=KEYS_BY_PATTERN_ONLY),
        ]
        | None
    ) = None


class QueryIn(Strict):
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
    top_k: Annotated[int | None, Field(ge=1, le=100)] = None
    rerank: bool = True
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(
        None, description="Retrieval mode; default: the SEARCH_MODE setting (hybrid)."
    )
    filters: Filters | None = None
    group_by: Literal["chunk", "document"] = Field(
        "chunk",
        description="`chunk`: the top_k best passages (several may come from one document). "
        "`document`: one result per document (its best passage, the passage's score, and "
        "`matches`: how many of its passages were among the candidates).",
    )
    context: Annotated[int, Field(ge=0, le=MAX_CONTEXT)] = Field(
        0,
        description="Neighbouring chunks returned with each result: up to this many before and "
        "after, in document order (`context_before`, `context_after`).",
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain non-whitespace text")
        return value


class ContextChunk(BaseModel):
    text: str
    chunk_index: int
    page: int | None
    start: int = Field(description="Offset into the page text, like a result's `start`.")
    end: int


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
    matches: int | None = Field(
        None,
        description="group_by=document: how many of this document's chunks were among the "
        "candidates (this result's chunk included).",
    )
    context_before: list[ContextChunk] | None = Field(
        None,
        description="context > 0: the chunks just before this one, in order. Neighbouring "
        "chunks overlap by a few tokens; offsets on the same page say by how much.",
    )
    context_after: list[ContextChunk] | None = None


class Timings(BaseModel):
    embed: float
    search: float
    rerank: float
    total: float


class QueryOut(BaseModel):
    results: list[QueryResult]
    reranked: bool
    mode: Literal["dense", "sparse", "hybrid"]
    group_by: Literal["chunk", "document"] = "chunk"
    note: str | None = Field(
        None, description="Set when the answer is degraded, e.g. BM25 only during a re-index."
    )
    timings_ms: Timings


# -- re-index --------------------------------------------------------------------------------------


class ReindexStatus(BaseModel):
    state: Literal["idle", "running", "switching", "switched", "done", "failed", "cancelled"] = (
        Field(
            description="running: copying into `target` (queries use `source`); switching/"
            "switched: making `target` active / dropping `source`; done, failed (rolled back: "
            "`source` stays active), cancelled."
        )
    )
    source: str | None = Field(None, description="The collection queries used before.")
    target: str | None = Field(None, description="The collection being built.")
    embedder: str | None = Field(None, description="The ml-api model the corpus is embedded with.")
    dimension: int | None = None
    done: int | None = Field(None, description="Documents written to `target` so far.")
    total: int | None = Field(None, description="Documents to write (grows with new uploads).")
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
