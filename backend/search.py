"""Query pipeline: embed the query, take a candidate pool from Qdrant, rerank, cut to top_k;
optionally one result per document (`group_by=document`) and the chunks around each result
(`context`), both answered from stored data in the same request."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from backend.mlapi import MLAPIError, MLClient, RerankerUnavailable
from backend.registry import Registry, Status
from backend.schemas import ContextChunk, QueryIn, QueryOut, QueryResult, Timings
from backend.settings import Settings
from backend.store import Hit, VectorStore, point_id

log = logging.getLogger("ragstack.backend.search")

# Chunks a grouped search looks at (at least): a document's `matches` counts its chunks among
# them. Enough for the usual top_k of 10 documents even when a few documents dominate.
GROUP_CANDIDATES = 100
MODEL_NOTE = (
    "the active collection was embedded by another model (re-index pending or running): "
    "answered with BM25 only until the re-index switches collections"
)


@dataclass
class Ranked:
    hit: Hit
    vector_score: float
    rerank_score: float | None
    matches: int | None = None

    @property
    def score(self) -> float:
        return self.rerank_score if self.rerank_score is not None else self.vector_score


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _group(ranked: list[Ranked]) -> list[Ranked]:
    """One entry per document, in rank order: its best chunk, with how many chunks it had."""
    best: dict[str, Ranked] = {}
    counts: dict[str, int] = {}
    for r in ranked:
        doc = r.hit.payload["document_id"]
        counts[doc] = counts.get(doc, 0) + 1
        best.setdefault(doc, r)
    for doc, r in best.items():
        r.matches = counts[doc]
    return list(best.values())


async def _with_context(
    results: list[QueryResult], n: int, store: VectorStore, registry: Registry
) -> None:
    """Fill each result's neighbours: chunks index-n .. index+n of the same content, fetched by
    their deterministic point ids in one store call."""
    hashes = registry.content_hashes(list({r.document_id for r in results}))
    wanted: list[str] = []
    for r in results:
        h = hashes.get(r.document_id)
        if h is not None:
            lo = max(0, r.chunk_index - n)
            wanted += [point_id(h, i) for i in range(lo, r.chunk_index + n + 1)]
    found = await store.retrieve(list(dict.fromkeys(wanted))) if wanted else []
    by_key = {(h.payload.get("document_id"), h.payload.get("chunk_index")): h for h in found}
    for r in results:
        before: list[ContextChunk] = []
        after: list[ContextChunk] = []
        for i in range(max(0, r.chunk_index - n), r.chunk_index + n + 1):
            hit = by_key.get((r.document_id, i))
            if hit is None or i == r.chunk_index:
                continue
            p = hit.payload
            item = ContextChunk(
                text=p["text"], chunk_index=i, page=p.get("page"), start=p["start"], end=p["end"]
            )
            (before if i < r.chunk_index else after).append(item)
        r.context_before, r.context_after = before, after


async def search(
    req: QueryIn, *, settings: Settings, ml: MLClient, store: VectorStore, registry: Registry
) -> QueryOut:
    started = time.perf_counter()
    top_k = req.top_k or settings.default_top_k
    filters = req.filters
    document_ids = filters.document_ids if filters else None
    metadata = filters.metadata if filters else None
    grouped = req.group_by == "document"

    mode = req.mode or settings.search_mode
    note: str | None = None
    # BM25 alone needs no embedding: skip the ml-api round trip.
    vector = (await ml.embed([req.query], query=True))[0] if mode != "sparse" else None
    if vector is not None:
        written_by = registry.embedder_of(store.collection)
        info = await ml.model_info() if written_by is not None else None  # cached by MLClient
        if written_by is not None and info is not None and written_by[1] != info.embedder_tag:
            # The ml-api serves another model than the one that wrote the active collection
            # and a re-index has not switched yet: its vectors cannot be compared with ours,
            # BM25 needs none, so the old collection still answers.
            vector, mode, note = None, "sparse", MODEL_NOTE
    embedded = time.perf_counter()

    ranked: list[Ranked] = []
    if document_ids != []:
        if grouped and not req.rerank:
            groups = await store.search_groups(
                vector,
                text=req.query,
                mode=mode,
                limit=top_k,
                candidates=max(GROUP_CANDIDATES, top_k),
                document_ids=document_ids,
                metadata=metadata,
            )
            ranked = [Ranked(g.best, g.best.score, None, g.matches) for g in groups]
        else:
            limit = max(settings.rerank_candidates, top_k) if req.rerank else top_k
            hits = await store.search(
                vector,
                text=req.query,
                mode=mode,
                limit=limit,
                document_ids=document_ids,
                metadata=metadata,
            )
            ranked = [Ranked(h, h.score, None) for h in hits]
    # The registry has the last word: a document being deleted or replaced still has ready
    # chunks for a moment, and must not show up.
    statuses = registry.statuses(list({r.hit.payload["document_id"] for r in ranked}))
    ranked = [r for r in ranked if statuses.get(r.hit.payload["document_id"]) == Status.INDEXED]
    searched = time.perf_counter()

    reranked = False
    if req.rerank and ranked:
        try:
            ranking = await ml.rerank(req.query, [r.hit.payload["text"] for r in ranked])
        except RerankerUnavailable:
            pass
        except MLAPIError as exc:
            # A query still has its vector order; losing the reranker should not fail it.
            log.warning("rerank failed, answering in vector order: %s", exc)
        else:
            scores = {i: s for i, s in ranking if 0 <= i < len(ranked)}
            if len(scores) == len(ranked):
                reranked = True
                for i, r in enumerate(ranked):
                    r.rerank_score = scores[i]
                ranked.sort(key=lambda r: r.score, reverse=True)
    if grouped and ranked and ranked[0].matches is None:
        ranked = _group(ranked)
    reranked_at = time.perf_counter()

    results = []
    for r in ranked[:top_k]:
        p = r.hit.payload
        results.append(
            QueryResult(
                text=p["text"],
                score=r.score,
                vector_score=r.vector_score,
                rerank_score=r.rerank_score,
                document_id=p["document_id"],
                filename=p.get("filename"),
                metadata=p.get("metadata") or {},
                page=p.get("page"),
                start=p["start"],
                end=p["end"],
                chunk_index=p["chunk_index"],
                matches=r.matches,
            )
        )
    if req.context and results:
        await _with_context(results, req.context, store, registry)
    done = time.perf_counter()
    return QueryOut(
        results=results,
        reranked=reranked,
        mode=mode,
        group_by=req.group_by,
        note=note,
        timings_ms=Timings(
            embed=_ms(embedded - started),
            search=_ms(searched - embedded),
            rerank=_ms(reranked_at - searched),
            total=_ms(done - started),
        ),
    )
