"""Client of the ml-api: embeddings, reranking, model info and the embedder's tokenizer.

One `httpx.AsyncClient` per app (created in the lifespan). Connection errors, 429 and 503 are
retried with exponential backoff, honouring Retry-After; large embedding jobs are split into
requests of EMBED_BATCH_SIZE texts with at most EMBED_CONCURRENCY in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from backend.settings import Settings
from ragstack_common.http import parse_retry_after

log = logging.getLogger("ragstack.backend.mlapi")

RETRY_STATUSES = (429, 503)
MAX_RETRY_AFTER_S = 30.0
MODEL_INFO_TTL_S = 30.0
# An upload is refused (503) when the ml-api is down; a contact this recent counts as "up".
AVAILABLE_TTL_S = 10.0
AVAILABILITY_PROBE_TIMEOUT_S = 3.0
# Retry-After sent to our clients when the ml-api is unreachable and did not suggest one.
DEFAULT_RETRY_AFTER_S = 5.0
# How the ml-api tells ingestion from queries (serving/priority.py).
BULK_HEADERS = {"X-Priority": "bulk"}


class MLAPIError(Exception):
    """The ml-api answered with an error we cannot retry, or kept failing."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class MLAPIUnavailable(MLAPIError):
    """The ml-api could not be reached (or stayed overloaded) after all retries."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, 503)
        self.retry_after = retry_after or DEFAULT_RETRY_AFTER_S


class RerankerUnavailable(MLAPIError):
    """The ml-api runs without a reranker model."""


@dataclass(frozen=True)
class ModelInfo:
    embedder_name: str
    embedder_tag: str
    dimension: int
    max_length: int
    reranker: dict[str, Any] | None
    prompts: tuple[str, ...] = ()  # prompt names of an asymmetric embedder (e5: query, passage)


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error") or body.get("detail") or body.get("message")
        if isinstance(err, dict):
            err = err.get("message")
        if err:
            return str(err)
    return str(body)[:300]


class MLClient:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        headers = {}
        if settings.ml_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.ml_api_key.get_secret_value()}"
        self.http = httpx.AsyncClient(
            base_url=settings.ml_api_url,
            headers=headers,
            timeout=httpx.Timeout(settings.ml_api_timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            transport=transport,
        )
        self._info: ModelInfo | None = None
        self._info_at = 0.0
        self._no_reranker_until = 0.0
        self._ok_at = float("-inf")  # last time the ml-api answered (not 429/503)

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- transport ---------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        retries: int | None = None,
        headers: dict[str, str] | None = None,
        patient: bool = False,
    ) -> httpx.Response:
        """Send with retries. Returns the final response (any status) unless the ml-api could
        not be reached or stayed at 429/503, which raises MLAPIUnavailable.

        `patient` (bulk work): being refused for load (429/503 with Retry-After) or a read
        timeout is waited out and retried for up to ML_API_BULK_PATIENCE_S without using up
        `retries`; only an unreachable ml-api uses them up."""
        retries = self.settings.ml_api_retries if retries is None else retries
        delay = self.settings.ml_api_backoff_s
        give_up_at = time.monotonic() + self.settings.ml_api_bulk_patience_s
        problem = ""
        suggested: float | None = None
        attempt = 0
        while True:
            wait = delay * (1 + random.random() * 0.25)  # jitter spreads retrying workers
            busy = False  # refused for load or slow: free retries when patient
            try:
                resp = await self.http.request(method, path, json=json, headers=headers)
            except httpx.ReadTimeout:
                self._ok_at = float("-inf")
                if not patient:
                    raise MLAPIUnavailable(
                        f"ml-api {path} timed out after {self.settings.ml_api_timeout_s:g}s"
                    ) from None
                problem = f"timed out after {self.settings.ml_api_timeout_s:g}s"
                busy = True
            except httpx.TransportError as exc:
                self._ok_at = float("-inf")  # the next upload probes again instead of trusting
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if resp.status_code not in RETRY_STATUSES or _permanent_503(resp):
                    if resp.status_code < 500:
                        self._ok_at = time.monotonic()
                    return resp
                problem = f"HTTP {resp.status_code}: {_error_text(resp)}"
                suggested = parse_retry_after(
                    resp.headers.get("Retry-After"), cap=MAX_RETRY_AFTER_S
                )
                wait = suggested or wait
                busy = suggested is not None
                if busy:
                    self._ok_at = time.monotonic()  # it answered: up, merely busy
            free = patient and busy and time.monotonic() + wait < give_up_at
            if not free:
                attempt += 1
                if attempt > retries:
                    break
            log.info("ml-api %s failed (%s); retry in %.1fs", path, problem, wait)
            await asyncio.sleep(wait)
            if not (free and suggested):
                delay = min(delay * 2, MAX_RETRY_AFTER_S)
        raise MLAPIUnavailable(
            f"ml-api unavailable at {self.settings.ml_api_url}: {problem}", suggested
        )

    @staticmethod
    def _check(resp: httpx.Response, what: str) -> Any:
        if resp.status_code != 200:
            raise MLAPIError(
                f"ml-api {what} failed with HTTP {resp.status_code}: {_error_text(resp)}",
                resp.status_code,
            )
        try:
            return resp.json()
        except ValueError:
            raise MLAPIError(f"ml-api {what} answered invalid JSON") from None

    # -- info --------------------------------------------------------------------------------------

    async def health(self, retries: int = 0) -> dict[str, Any]:
        return self._check(await self._request("GET", "/health", retries=retries), "/health")

    async def ensure_available(self) -> None:
        """Raise MLAPIUnavailable unless the ml-api answered recently or answers a quick probe."""
        if time.monotonic() - self._ok_at < AVAILABLE_TTL_S:
            return
        try:
            async with asyncio.timeout(AVAILABILITY_PROBE_TIMEOUT_S):
                resp = await self._request("GET", "/health", retries=0)
        except TimeoutError:
            raise MLAPIUnavailable(
                f"ml-api at {self.settings.ml_api_url} did not answer /health within "
                f"{AVAILABILITY_PROBE_TIMEOUT_S:g} s"
            ) from None
        if resp.status_code != 200:
            raise MLAPIUnavailable(
                f"ml-api at {self.settings.ml_api_url} is not healthy: HTTP {resp.status_code}"
            )

    async def model_info(self, refresh: bool = False) -> ModelInfo:
        """Embedder dimension and max length, reranker presence; cached for a short while."""
        fresh = time.monotonic() - self._info_at < MODEL_INFO_TTL_S
        if self._info is not None and fresh and not refresh:
            return self._info
        body = self._check(await self._request("GET", "/health"), "/health")
        try:
            models = body["models"]
            emb = models["embedder"]
            info = ModelInfo(
                embedder_name=str(emb.get("name", "")),
                embedder_tag=str(emb.get("tag", "")),
                dimension=int(emb["dimension"]),
                max_length=int(emb["max_length"]),
                reranker=models.get("reranker"),
                prompts=tuple(emb.get("prompts") or ()),
            )
        except (KeyError, TypeError, ValueError):
            raise MLAPIError("ml-api /health lacks models.embedder.dimension/max_length") from None
        self._info, self._info_at = info, time.monotonic()
        return info

    async def tokenizer(self) -> dict[str, Any]:
        body = self._check(await self._request("GET", "/tokenizer"), "/tokenizer")
        if not isinstance(body, dict):
            raise MLAPIError("ml-api /tokenizer did not answer a tokenizer.json object")
        return body

    # -- inference ---------------------------------------------------------------------------------

    async def embed(self, texts: list[str], *, query: bool = False) -> list[list[float]]:
        """Embed any number of texts, in order, as several bounded requests; with the model's
        query prompt for a query and its document prompt for chunks, when it has them."""
        # Ingestion has just fetched the info (for the dimension); a query may need to.
        info = self._info if self._info is not None or not query else await self.model_info()
        prompt = _prompt_name(info, query=query)
        size = self.settings.embed_batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        gate = asyncio.Semaphore(self.settings.embed_concurrency)

        async def one(batch: list[str]) -> list[list[float]]:
            async with gate:
                return await self._embed_batch(batch, prompt)

        results = await asyncio.gather(*(one(b) for b in batches))
        return [vec for batch in results for vec in batch]

    async def embed_bulk(self, texts: list[str]) -> list[list[float]]:
        """One /embed request of chunks marked as bulk work (ingestion), with the model's document
        prompt when it has one: served after queries, and patient: load refusals and slow answers
        are waited out, never reported as failures."""
        # Ingestion fetches the model info (for the dimension) before it embeds.
        return await self._embed_batch(texts, _prompt_name(self._info, query=False), bulk=True)

    async def _embed_batch(
        self, texts: list[str], prompt: str | None, bulk: bool = False
    ) -> list[list[float]]:
        payload = {"inputs": texts, "normalize": True, "truncate": True}
        if prompt is not None:
            payload["prompt_name"] = prompt
        resp = await self._request(
            "POST", "/embed", json=payload, headers=BULK_HEADERS if bulk else None, patient=bulk
        )
        body = self._check(resp, "/embed")
        if not isinstance(body, list) or len(body) != len(texts):
            raise MLAPIError(f"ml-api /embed returned {len(body)} vectors for {len(texts)} texts")
        return body

    async def rerank(self, query: str, texts: list[str]) -> list[tuple[int, float]]:
        """(index into texts, score) best first. Raises RerankerUnavailable without a reranker."""
        if time.monotonic() < self._no_reranker_until:
            raise RerankerUnavailable("the ml-api has no reranker")
        payload = {
            "query": query,
            "texts": texts,
            "raw_scores": False,
            "return_text": False,
            "truncate": True,
        }
        resp = await self._request("POST", "/rerank", json=payload)
        if _permanent_503(resp):
            # Do not ask again for a while: a reranker appears only when the ml-api restarts.
            self._no_reranker_until = time.monotonic() + MODEL_INFO_TTL_S
            raise RerankerUnavailable(_error_text(resp), 503)
        body = self._check(resp, "/rerank")
        try:
            return [(int(h["index"]), float(h["score"])) for h in body]
        except (KeyError, TypeError, ValueError):
            raise MLAPIError("ml-api /rerank answered an unexpected shape") from None


def _permanent_503(resp: httpx.Response) -> bool:
    # "No reranker loaded" is a 503 without Retry-After: waiting will not fix it.
    return (
        resp.status_code == 503
        and "Retry-After" not in resp.headers
        and "reranker" in _error_text(resp).lower()
    )


def _prompt_name(info: ModelInfo | None, *, query: bool) -> str | None:
    """The embedder's query prompt for a query, its document prompt for chunks (asymmetric
    models such as e5/bge), or None when it declares no such prompt."""
    names = ("search_query", "query") if query else ("search_document", "document", "passage")
    return next((n for n in names if info is not None and n in info.prompts), None)
