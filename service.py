"""ml-api: the BentoML service that serves embeddings and reranking.

Only HTTP wiring lives here. The runtimes are in `models/`, batching and the shared checks in
`serving/engine.py`, the compatible response shapes in `serving/compat.py`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import bentoml
from pydantic import Field

from models.embedder import load_embedder
from models.reranker import load_reranker
from models.settings import get_settings
from models.store import find_model
from serving import clientlog, compat
from serving.edge import EdgeMiddleware
from serving.engine import Engine
from serving.errors import APIError, Style, error_response
from serving.info import info_app
from serving.openapi import with_error_responses
from serving.schemas import OpenAIEmbeddingList, RerankHit, RerankResponse, Text, Texts, TokenIds

log = logging.getLogger("ml_api")
settings = get_settings()

EmbedInputs = Annotated[
    Text | Texts,
    Field(description="One text or a list of texts.", examples=[["What is BentoML?", "Qdrant"]]),
]
OpenAIInput = Annotated[
    Text | Texts | TokenIds | list[TokenIds],
    Field(description="Text, list of texts, token ids, or list of token id lists."),
]


@bentoml.service(
    name="ml-api",
    resources={"gpu": 1},
    traffic={"timeout": 300},
    workers=1,
    http={"port": 8001},
    logging={"access": {"enabled": False}},
)
@bentoml.mount_asgi_app(info_app, path="/")
class MLService:
    """Text embeddings (ONNX Runtime) and cross-encoder reranking, with token-budget batching."""

    # Class attributes, so that `bentoml build` packs the models (the reranker only when it
    # was imported) and a containerized bento finds them in its own store.
    embedder_model = bentoml.models.BentoModel(settings.embedder)
    if settings.require_reranker or find_model(settings.reranker) is not None:
        reranker_model = bentoml.models.BentoModel(settings.reranker)

    def __init__(self) -> None:
        clientlog.install()
        embedder = load_embedder(settings)
        reranker = load_reranker(settings)
        self.engine = Engine(embedder, reranker, settings)
        self._warm_up()
        info_app.state.engine = self.engine
        info_app.state.openapi = with_error_responses(MLService.openapi_spec.asdict())
        self.ready = True
        log.info(
            "ml-api ready: embedder %s on %s, reranker %s",
            embedder.info.tag,
            ",".join(embedder.info.providers) or embedder.info.device,
            reranker.info.tag if reranker else "none",
        )

    def _warm_up(self) -> None:
        # First runs allocate arenas and pick kernels; do it before /readyz says ready.
        texts = ["warm up", "a somewhat longer sentence to warm up the kernels " * 8]
        self.engine.embedder.embed(texts)
        if self.engine.reranker is not None:
            self.engine.reranker.score([("warm up", t) for t in texts])

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.on_shutdown
    def _stop(self) -> None:
        self.engine.close()

    # -- TEI routes --------------------------------------------------------------------------------

    @bentoml.api(route="/embed")
    async def embed(
        self, inputs: EmbedInputs, normalize: bool = True, truncate: bool = True
    ) -> list[list[float]]:
        """Embed texts (TEI `/embed`): one vector per input, in input order."""
        try:
            texts = [inputs] if isinstance(inputs, str) else inputs
            result = await self.engine.embed(texts, normalize=normalize, truncate=truncate)
            return compat.json_response(result.vectors, result.stats)  # type: ignore[return-value]
        except APIError as err:
            return error_response(Style.TEI, err)  # type: ignore[return-value]

    @bentoml.api(route="/rerank")
    async def rerank(
        self,
        query: Text,
        texts: Texts,
        raw_scores: bool = False,
        return_text: bool = False,
        truncate: bool = True,
    ) -> list[RerankHit]:
        """Score texts against a query with the cross-encoder (TEI `/rerank`), best first."""
        try:
            scores = await self.engine.rerank(query, texts, truncate=truncate)
            body = compat.tei_rerank(scores, texts, raw_scores=raw_scores, return_text=return_text)
            return compat.json_response(body, scores.stats)  # type: ignore[return-value]
        except APIError as err:
            return error_response(Style.TEI, err)  # type: ignore[return-value]

    # -- OpenAI ------------------------------------------------------------------------------------

    async def _openai_embeddings(
        self,
        input: Any,
        model: str | None,
        encoding_format: str,
        dimensions: int | None,
    ) -> Any:
        try:
            name = compat.check_model(model, self.engine.embedder.info, "embedder")
            result = await compat.openai_embed(self.engine, input, dimensions)
            body = compat.openai_embedding_list(result, name, encoding_format)
            return compat.json_response(body, result.stats)
        except APIError as err:
            return error_response(Style.OPENAI, err)

    @bentoml.api(route="/v1/embeddings")
    async def openai_embeddings(
        self,
        input: OpenAIInput,
        model: str | None = None,
        encoding_format: Literal["float", "base64"] = "float",
        dimensions: Annotated[int | None, Field(ge=1)] = None,
        user: str | None = None,
    ) -> OpenAIEmbeddingList:
        """OpenAI-compatible embeddings (`client.embeddings.create`)."""
        return await self._openai_embeddings(input, model, encoding_format, dimensions)

    @bentoml.api(route="/embeddings")
    async def openai_embeddings_alias(
        self,
        input: OpenAIInput,
        model: str | None = None,
        encoding_format: Literal["float", "base64"] = "float",
        dimensions: Annotated[int | None, Field(ge=1)] = None,
        user: str | None = None,
    ) -> OpenAIEmbeddingList:
        """Same as `/v1/embeddings`, for clients whose base URL has no `/v1`."""
        return await self._openai_embeddings(input, model, encoding_format, dimensions)

    # -- Cohere / Jina -----------------------------------------------------------------------------

    @bentoml.api(route="/v2/rerank")
    async def cohere_rerank_v2(
        self,
        query: Text,
        documents: Texts,
        model: str | None = None,
        top_n: Annotated[int | None, Field(ge=1)] = None,
        max_tokens_per_doc: Annotated[int | None, Field(ge=1)] = None,
        return_documents: bool = False,
    ) -> RerankResponse:
        """Cohere v2 rerank (`ClientV2.rerank`)."""
        return await self._rerank_compat(
            query, documents, model, top_n, max_tokens_per_doc, return_documents, "2"
        )

    @bentoml.api(route="/v1/rerank")
    async def rerank_v1(
        self,
        query: Text,
        documents: Annotated[
            list[Text | compat.DocumentText],
            Field(min_length=1, max_length=settings.max_client_batch),
        ],
        model: str | None = None,
        top_n: Annotated[int | None, Field(ge=1)] = None,
        return_documents: bool = False,
        max_chunks_per_doc: int | None = None,
    ) -> RerankResponse:
        """Jina / Cohere v1 rerank: documents as strings or `{"text"}` objects."""
        texts = [d if isinstance(d, str) else d.text for d in documents]
        return await self._rerank_compat(query, texts, model, top_n, None, return_documents, "1")

    async def _rerank_compat(
        self,
        query: str,
        texts: list[str],
        model: str | None,
        top_n: int | None,
        max_tokens_per_doc: int | None,
        return_documents: bool,
        version: str,
    ) -> Any:
        try:
            reranker = self.engine.require_reranker()
            name = compat.check_model(model, reranker.info, "reranker")
            scores = await self.engine.rerank(
                query,
                texts,
                truncate=True,
                field="documents",
                max_tokens_per_doc=max_tokens_per_doc,
            )
            body = compat.rerank_response(scores, texts, name, top_n, return_documents, version)
            return compat.json_response(body, scores.stats)
        except APIError as err:
            return error_response(Style.COHERE, err)


MLService.add_asgi_middleware(  # type: ignore[attr-defined]
    EdgeMiddleware,
    max_payload_bytes=settings.max_payload_bytes,
    api_key=settings.api_key,
    body_timeout_s=settings.body_timeout_s,
)
