"""Query pipeline: embed the query, take a candidate pool from Qdrant, rerank, cut to top_k."""

from __future__ import annotations

import logging
import time

from backend.mlapi import MLAPIError, MLClient, RerankerUnavailable
from backend.registry import Registry, Status
from backend.schemas import QueryIn, QueryOut, QueryResult, Timings
from backend.settings import Settings
from backend.store import Hit, VectorStore

log = logging.getLogger("ragstack.backend.search")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def search(
    req: QueryIn, *, settings: Settings, ml: MLClient, store: VectorStore, registry: Registry
) -> QueryOut:
    started = time.perf_counter()
    top_k = req.top_k or settings.default_top_k
    filters = req.filters
    document_ids = filters.document_ids if filters else None
    metadata = filters.metadata if filters else None

    mode = req.mode or settings.search_mode
    # BM25 alone needs no embedding: skip the ml-api round trip.
    vector = (await ml.embed([req.query], query=True))[0] if mode != "sparse" else None
    embedded = time.perf_counter()

    limit = max(settings.rerank_candidates, top_k) if req.rerank else top_k
    hits: list[Hit] = []
    if document_ids != []:
        hits = await store.search(
            vector,
            text=req.query,
            mode=mode,
            limit=limit,
            document_ids=document_ids,
            metadata=metadata,
        )
    # The registry has the last word: a document being deleted or replaced still has ready
    # chunks for a moment, and must not show up.
    statuses = registry.statuses(list({h.payload["document_id"] for h in hits}))
    hits = [h for h in hits if statuses.get(h.payload["document_id"]) == Status.INDEXED]
    searched = time.perf_counter()

    rerank_scores: dict[int, float] = {}
    reranked = False
    if req.rerank and hits:
        try:
            ranking = await ml.rerank(req.query, [h.payload["text"] for h in hits])
        except RerankerUnavailable:
            pass
        except MLAPIError as exc:
            # A query still has its vector order; losing the reranker should not fail it.
            log.warning("rerank failed, answering in vector order: %s", exc)
        else:
            rerank_scores = {i: s for i, s in ranking if 0 <= i < len(hits)}
            reranked = len(rerank_scores) == len(hits)
    reranked_at = time.perf_counter()

    order = list(range(len(hits)))
    if reranked:
        order.sort(key=lambda i: rerank_scores[i], reverse=True)
    results = []
    for i in order[:top_k]:
        p = hits[i].payload
        rerank_score = rerank_scores[i] if reranked else None
        results.append(
            QueryResult(
                text=p["text"],
                score=rerank_score if rerank_score is not None else hits[i].score,
                vector_score=hits[i].score,
                rerank_score=rerank_score,
                document_id=p["document_id"],
                filename=p.get("filename"),
                metadata=p.get("metadata") or {},
                page=p.get("page"),
                start=p["start"],
                end=p["end"],
                chunk_index=p["chunk_index"],
            )
        )
    done = time.perf_counter()
    return QueryOut(
        results=results,
        reranked=reranked,
        mode=mode,
        timings_ms=Timings(
            embed=_ms(embedded - started),
            search=_ms(searched - embedded),
            rerank=_ms(reranked_at - searched),
            total=_ms(done - started),
        ),
    )
