"""Re-index API: start, follow and cancel the rebuild of the corpus with the current model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from backend.reindex import ReindexConflict, Reindexer
from backend.schemas import ReindexStatus

router = APIRouter(prefix="/reindex", tags=["reindex"])


def _reindexer(request: Request) -> Reindexer:
    return request.app.state.reindexer


ReindexerDep = Annotated[Reindexer, Depends(_reindexer)]


@router.post(
    "",
    status_code=202,
    response_model=ReindexStatus,
    summary="Re-chunk and re-embed every document with the ml-api's current model into a new "
    "collection; queries keep using the old one until the atomic switch",
    responses={409: {"description": "A re-index is already running"}},
)
async def start_reindex(reindexer: ReindexerDep) -> ReindexStatus:
    try:
        return ReindexStatus(**await reindexer.start())
    except ReindexConflict as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("", response_model=ReindexStatus, summary="Progress of the current or last re-index")
async def reindex_status(reindexer: ReindexerDep) -> ReindexStatus:
    return ReindexStatus(**reindexer.status())


@router.delete(
    "",
    response_model=ReindexStatus,
    summary="Cancel a running re-index (its new collection is dropped; nothing else changes)",
    responses={409: {"description": "No re-index is running (or it is already switching)"}},
)
async def cancel_reindex(reindexer: ReindexerDep) -> ReindexStatus:
    try:
        return ReindexStatus(**await reindexer.cancel())
    except ReindexConflict as exc:
        raise HTTPException(409, str(exc)) from None
