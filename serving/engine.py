"""The inference engine: runtimes plus their batchers, and the checks every route shares.

Every route (TEI, OpenAI, Cohere/Jina) goes through `embed` / `rerank` here, so there is one
batching path and one set of limits.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np

from models.runtime.embedder.base import Embedder
from models.runtime.reranker.base import EncodedPair, Reranker
from models.runtime.settings import MLSettings
from serving.batcher import BackgroundRunner, Batcher, BatchStats, Overloaded
from serving.errors import APIError
from serving.metrics import observe_batch
from serving.priority import current_lane
from serving.validation import check_token_ids, isolating, raise_failed, vocab_size

log = logging.getLogger(__name__)

# Below this many texts and characters, tokenizing inline beats a thread hop; anything larger
# runs in a thread so the event loop (health probes, other requests) never waits on it.
_INLINE_TOKENIZE = 8
_INLINE_CHARS = 32_000


@dataclass
class Embeddings:
    vectors: np.ndarray  # (n, dim) float32, normalized as requested
    token_counts: list[int]
    stats: BatchStats


@dataclass
class Scores:
    logits: list[float]  # in input order
    token_counts: list[int]
    stats: BatchStats


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def l2_normalize(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def background_runner(
    embedder: Embedder, settings: MLSettings, on_gpu: bool
) -> BackgroundRunner[list[int], np.ndarray] | None:
    """Bulk embedding passes on low-priority threads, when the settings and the runtime allow.
    Only the embedder gets one: ingestion is embedding; a bulk rerank is rare and shares the
    reranker's worker."""
    if not settings.background_bulk(on_gpu):
        return None
    forward = embedder.background_forward()
    if forward is None:
        log.info("bulk passes share the model worker (the runtime has no background session)")
        return None
    return BackgroundRunner(
        isolating(forward),
        threads=settings.bulk_thread_count(),
        nice=settings.bulk_nice,
        yield_after=settings.bulk_yield_after,
    )


class Engine:
    def __init__(self, embedder: Embedder, reranker: Reranker | None, settings: MLSettings) -> None:
        self.embedder = embedder
        self.reranker = reranker
        self.settings = settings
        self.vocab_size = vocab_size(embedder.tokenizer_json())
        on_gpu = embedder.info.device.startswith("cuda")
        budget = settings.batch_token_budget(on_gpu)
        background = background_runner(embedder, settings, on_gpu)
        self.embed_batcher: Batcher[list[int], np.ndarray] = Batcher(
            "embed",
            isolating(embedder.forward),
            token_budget=budget,
            max_items=settings.batch_item_cap(on_gpu),
            max_queued_tokens=settings.max_queued_tokens,
            max_queued_bulk_tokens=settings.max_queued_bulk_tokens,
            bulk_token_budget=settings.bulk_token_budget(on_gpu),
            background=background,
            on_batch=lambda n, t, s: observe_batch("embed", n, t, s),
        )
        self.rerank_batcher: Batcher[EncodedPair, float] | None = None
        if reranker is not None:
            rerank_gpu = reranker.info.device.startswith("cuda")
            self.rerank_batcher = Batcher(
                "rerank",
                isolating(reranker.forward),
                token_budget=settings.batch_token_budget(rerank_gpu),
                max_items=settings.batch_item_cap(rerank_gpu),
                max_queued_tokens=settings.max_queued_tokens,
                max_queued_bulk_tokens=settings.max_queued_bulk_tokens,
                bulk_token_budget=settings.bulk_token_budget(rerank_gpu),
                on_batch=lambda n, t, s: observe_batch("rerank", n, t, s),
            )

    def close(self) -> None:
        self.embed_batcher.close()
        if self.rerank_batcher is not None:
            self.rerank_batcher.close()

    # -- embeddings ------------------------------------------------------------------------------

    def check_count(self, n: int, field: str) -> None:
        limit = self.settings.max_client_batch
        if n == 0:
            raise APIError(422, f"{field} must not be empty", param=field, code="empty_input")
        if n > limit:
            raise APIError(
                413,
                f"{field} has {n} items; the limit is {limit} per request "
                "(ML_API_MAX_CLIENT_BATCH)",
                param=field,
                code="too_many_items",
            )

    async def tokenize(self, texts: list[str], truncate: bool, field: str) -> list[list[int]]:
        for i, t in enumerate(texts):
            if not t or not t.strip():
                raise APIError(
                    422,
                    f"{field}[{i}] is empty; every text needs at least one non-space character",
                    param=field,
                    code="empty_text",
                )
        if len(texts) <= _INLINE_TOKENIZE and sum(map(len, texts)) <= _INLINE_CHARS:
            ids = self.embedder.tokenize(texts, truncate)
        else:
            ids = await asyncio.to_thread(self.embedder.tokenize, texts, truncate)
        if not truncate:
            self._check_lengths([len(x) for x in ids], self.embedder.info.max_length, field)
        return ids

    def truncate_ids(self, ids: list[list[int]], truncate: bool, field: str) -> list[list[int]]:
        """Caller-supplied token ids: same length rule as text, and only ids of the vocabulary."""
        max_len = self.embedder.info.max_length
        if not truncate:
            self._check_lengths([len(x) for x in ids], max_len, field)
        for i, x in enumerate(ids):
            if not x:
                raise APIError(422, f"{field}[{i}] is an empty token list", param=field)
        check_token_ids(ids, self.vocab_size, field)
        return [x[:max_len] for x in ids]

    @staticmethod
    def _check_lengths(lengths: list[int], max_len: int, field: str) -> None:
        for i, n in enumerate(lengths):
            if n > max_len:
                raise APIError(
                    413,
                    f"{field}[{i}] is {n} tokens long; the model's limit is {max_len} "
                    "(send truncate=true to cut it)",
                    param=field,
                    code="input_too_long",
                )

    async def embed_ids(
        self, ids: list[list[int]], *, normalize: bool, dimensions: int | None = None
    ) -> Embeddings:
        rows, stats = await self._submit(self.embed_batcher, ids, [len(x) for x in ids])
        vectors = np.stack(rows).astype(np.float32, copy=False)
        if dimensions is not None:
            vectors = vectors[:, :dimensions]
        if normalize:
            vectors = l2_normalize(vectors)
        return Embeddings(vectors, [len(x) for x in ids], stats)

    async def embed(
        self,
        texts: list[str],
        *,
        normalize: bool,
        truncate: bool,
        field: str = "inputs",
        dimensions: int | None = None,
    ) -> Embeddings:
        self.check_count(len(texts), field)
        ids = await self.tokenize(texts, truncate, field)
        return await self.embed_ids(ids, normalize=normalize, dimensions=dimensions)

    # -- reranking -------------------------------------------------------------------------------

    def require_reranker(self) -> Reranker:
        if self.reranker is None:
            raise APIError(
                503,
                "no reranker model is loaded; import one with "
                "`ragctl models import-reranker SOURCE` and restart the ml-api",
                code="reranker_unavailable",
            )
        return self.reranker

    async def rerank(
        self,
        query: str,
        texts: list[str],
        *,
        truncate: bool,
        field: str = "texts",
        max_tokens_per_doc: int | None = None,
    ) -> Scores:
        reranker = self.require_reranker()
        assert self.rerank_batcher is not None
        if not query.strip():
            raise APIError(422, "query is empty", param="query", code="empty_text")
        self.check_count(len(texts), field)
        for i, t in enumerate(texts):
            if not t.strip():
                raise APIError(422, f"{field}[{i}] is empty", param=field, code="empty_text")
        if max_tokens_per_doc is not None:
            texts = await asyncio.to_thread(reranker.cut_passages, texts, max_tokens_per_doc)
        pairs = [(query, t) for t in texts]
        # Tokenized once: the lengths for the limit, the batcher's costs and the forward pass.
        encoded = await asyncio.to_thread(reranker.encode, pairs)
        counts = [e.length for e in encoded]
        if not truncate:
            self._check_lengths(counts, reranker.info.max_length, field)
        costs = [len(e.input_ids) for e in encoded]  # what the model sees, truncated
        logits, stats = await self._submit(self.rerank_batcher, encoded, costs)
        return Scores([float(x) for x in logits], counts, stats)

    @staticmethod
    async def _submit(
        batcher: Batcher, payloads: list, costs: list[int]
    ) -> tuple[list, BatchStats]:
        try:
            results, stats = await batcher.submit(payloads, costs, current_lane())
            raise_failed(results, "input")
            return results, stats
        except Overloaded as exc:
            limit = "MAX_QUEUED_BULK_TOKENS" if exc.lane == "bulk" else "MAX_QUEUED_TOKENS"
            raise APIError(
                429,
                f"the ml-api's {exc.lane} lane is at capacity (ML_API_{limit}); retry later",
                code="overloaded",
                retry_after_s=exc.retry_after_s,
            ) from exc
