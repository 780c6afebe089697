"""Search API."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from backend.deps import MLDep, RegistryDep, SettingsDep, StoreDep
from backend.schemas import QueryIn, QueryOut
from backend.search import search

router = APIRouter(tags=["query"])


@router.post(
    "/query",
    response_model=QueryOut,
    summary="Semantic search: vector candidates, reranked by the ml-api, cut to top_k",
    responses={
        422: {"description": "Invalid field (names the field and the limit)"},
        503: {"description": "The ml-api or Qdrant is unavailable"},
    },
)
async def query(
    body: QueryIn, settings: SettingsDep, ml: MLDep, store: StoreDep, registry: RegistryDep
) -> QueryOut:
    if len(body.query) > settings.max_query_chars:
        raise HTTPException(
            422, f"query: at most {settings.max_query_chars} characters (got {len(body.query)})"
        )
    return await search(body, settings=settings, ml=ml, store=store, registry=registry)
