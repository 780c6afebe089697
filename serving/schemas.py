"""Request field types and response models of the ml-api, for validation and the OpenAPI spec."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from models.runtime.settings import get_settings

_MAX = get_settings().max_client_batch

Text = Annotated[str, Field(min_length=1, description="A non-empty text.")]
Texts = Annotated[list[Text], Field(min_length=1, max_length=_MAX)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


# -- TEI ------------------------------------------------------------------------------------------


class RerankHit(BaseModel):
    index: int = Field(description="Position of the text in the request.")
    score: float = Field(description="Relevance: sigmoid(logit), or the raw logit with raw_scores.")
    text: str | None = Field(None, description="The text, when return_text is true.")


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


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    meta: CohereMeta
    usage: RerankUsage
