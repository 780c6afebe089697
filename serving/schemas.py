"""Request field types and response models of the ml-api, for validation and the OpenAPI spec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from models.runtime.settings import get_settings

_MAX = get_settings().max_client_batch

# At least one non-space character (JSON Schema `pattern` matches anywhere), so that what the
# schema allows the server accepts.
Text = Annotated[
    str,
    Field(min_length=1, pattern=r"\S", description="A text with a non-space character."),
]
Texts = Annotated[list[Text], Field(min_length=1, max_length=_MAX)]
TokenIds = Annotated[
    list[Annotated[int, Field(ge=0)]],
    Field(
        min_length=1,
        description="Token ids of the served embedder's own tokenizer (GET /tokenizer, POST "
        "/tokenize), special tokens included; used as given.",
    ),
]
TruncationDirection = Annotated[
    Literal["Right", "right"],
    Field(description="TEI: which end to cut when truncating; only `Right` is supported."),
]
PromptName = Annotated[
    str | None,
    Field(
        description="TEI: the name of one of the model's prompts (GET /info) to prepend; "
        "default: the model's default prompt, if any."
    ),
]


# -- TEI ------------------------------------------------------------------------------------------


class RerankHit(BaseModel):
    index: int = Field(description="Position of the text in the request.")
    score: float = Field(description="Relevance: sigmoid(logit), or the raw logit with raw_scores.")
    text: str | None = Field(None, description="The text, when return_text is true.")


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None = Field(description="Character offset in the input; null for specials.")
    stop: int | None


# -- OpenAI ---------------------------------------------------------------------------------------


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")
    index: int


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


# -- Cohere / Jina ---------------------------------------------------------------------------


class DocumentText(BaseModel):
    text: str = Field(min_length=1)


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: DocumentText | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CohereMeta(BaseModel):
    api_version: dict[str, str]
    billed_units: dict[str, int]
    tokens: dict[str, int]


class CohereEmbeddings(BaseModel):
    float_: list[list[float]] | None = Field(None, alias="float")
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = None
    ubinary: list[list[int]] | None = None
    base64: list[str] | None = None


class CohereEmbedResponse(BaseModel):
    id: str
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"
    embeddings: CohereEmbeddings
    texts: list[str]
    meta: dict[str, Any]


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    meta: CohereMeta
    usage: RerankUsage


# -- Infinity / vLLM style `documents` body on /rerank ------------------------------------------


class DocumentsRerankResult(BaseModel):
    index: int
    relevance_score: float
    document: str | None = Field(None, description="The document, when return_documents.")


class DocumentsRerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    id: str
    created: int
    model: str
    results: list[DocumentsRerankResult]
    usage: RerankUsage
