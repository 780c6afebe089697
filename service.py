"""ml-api: the BentoML service that serves embeddings and reranking.

Only HTTP wiring lives here. The runtimes are in `models/`, batching and the shared checks in
`serving/engine.py`, the compatible response shapes in `serving/compat.py`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

import bentoml
from pydantic import Field

from models.runtime.embedder import load_embedder
from models.runtime.registry import find_model
from models.runtime.reranker import load_reranker
from models.runtime.settings import ML_API_PORT, get_settings
from serving import clientlog, cohere, compat, prompts
from serving.edge import EdgeMiddleware
from serving.engine import Engine
from serving.errors import APIError, Style, error_response
from serving.fastpath import FastPathMiddleware
from serving.guard import RequestGuard, fields_from_openapi
from serving.info import info_app
from serving.openapi import with_error_responses, with_model_limits
from serving.priority import PriorityMiddleware
from serving.schemas import (
    CohereEmbedResponse,
    DocumentsRerankResponse,
    OpenAIEmbeddingList,
    PromptName,
    RerankHit,
    RerankResponse,
    SimpleToken,
    Text,
    Texts,
    TokenIds,
    TruncationDirection,
)
from serving.tei import TEITokenizer

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
    http={"port": ML_API_PORT},
    logging={"access": {"enabled": False}},
    # Without ML_API_TRACING every URL is excluded from tracing: BentoML's always-installed
    # OpenTelemetry middleware then passes requests straight through.
    tracing={} if settings.tracing else {"excluded_urls": ["."]},
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
        self.tei = TEITokenizer(self.engine)
        self._warm_up()
        info_app.state.engine = self.engine
        info = embedder.info
        info_app.state.openapi = with_model_limits(
            with_error_responses(MLService.openapi_spec.asdict()),
            dimension=info.dimension,
            max_length=info.max_length,
            vocab_size=self.engine.vocab_size,
            prompts=list(info.prompts),
        )
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
        embedder, reranker = self.engine.embedder, self.engine.reranker
        embedder.forward(embedder.tokenize(texts))
        if reranker is not None:
            reranker.forward(reranker.encode([("warm up", t) for t in texts]))

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.on_shutdown
    def _stop(self) -> None:
        self.engine.close()

    # -- TEI routes --------------------------------------------------------------------------------

    async def _tei_embed(
        self, inputs: str | list[str], normalize: bool, truncate: bool, direction: str, prompt: Any
    ) -> Any:
        try:
            compat.check_tei_options(direction)
            texts = [inputs] if isinstance(inputs, str) else inputs
            texts = prompts.apply(prompts.by_name(self.engine.embedder.info, prompt), texts)
            result = await self.engine.embed(texts, normalize=normalize, truncate=truncate)
            return compat.json_response(result.vectors, result.stats)
        except APIError as err:
            return error_response(Style.TEI, err)

    @bentoml.api(route="/embed")
    async def embed(
        self,
        inputs: EmbedInputs,
        normalize: bool = True,
        truncate: bool = True,
        truncation_direction: TruncationDirection = "Right",
        prompt_name: PromptName = None,
    ) -> list[list[float]]:
        """Embed texts (TEI `/embed`): one vector per input, in input order."""
        return await self._tei_embed(  # type: ignore[no-any-return]
            inputs, normalize, truncate, truncation_direction, prompt_name
        )

    @bentoml.api(route="/")
    async def tei_root(
        self,
        inputs: EmbedInputs,
        normalize: bool = True,
        truncate: bool = True,
        truncation_direction: TruncationDirection = "Right",
        prompt_name: PromptName = None,
    ) -> list[list[float]]:
        """TEI's `POST /` for an embedding model (same as `/embed`): what TEI clients pointed
        at the bare URL call (huggingface_hub `InferenceClient(model=URL)`, Haystack, litellm).
        `GET /` still serves the API docs."""
        return await self._tei_embed(  # type: ignore[no-any-return]
            inputs, normalize, truncate, truncation_direction, prompt_name
        )

    @bentoml.api(route="/invocations")
    async def tei_invocations(
        self,
        inputs: EmbedInputs,
        normalize: bool = True,
        truncate: bool = True,
        truncation_direction: TruncationDirection = "Right",
        prompt_name: PromptName = None,
    ) -> list[list[float]]:
        """TEI's `POST /invocations` (the SageMaker route), same as `/embed`."""
        return await self._tei_embed(  # type: ignore[no-any-return]
            inputs, normalize, truncate, truncation_direction, prompt_name
        )

    @bentoml.api(route="/tokenize")
    async def tokenize(
        self, inputs: EmbedInputs, add_special_tokens: bool = True, prompt_name: PromptName = None
    ) -> list[list[SimpleToken]]:
        """TEI `/tokenize`: the embedder's tokens per input, with ids, text and offsets."""
        try:
            texts = [inputs] if isinstance(inputs, str) else inputs
            texts = prompts.apply(prompts.by_name(self.engine.embedder.info, prompt_name), texts)
            self.engine.check_count(len(texts), "inputs")
            body = await asyncio.to_thread(self.tei.tokenize, texts, add_special_tokens)
            return compat.plain_json(body)  # type: ignore[return-value]
        except APIError as err:
            return error_response(Style.TEI, err)  # type: ignore[return-value]

    @bentoml.api(route="/decode")
    async def decode(
        self,
        ids: Annotated[
            TokenIds | list[TokenIds],
            Field(description="Token ids of the embedder's tokenizer, or a list of such lists."),
        ],
        skip_special_tokens: bool = True,
    ) -> list[str]:
        """TEI `/decode`: token ids back to text."""
        try:
            rows = [ids] if ids and isinstance(ids[0], int) else ids
            self.engine.check_count(len(rows), "ids")
            texts = self.tei.decode(rows, skip_special_tokens)  # type: ignore[arg-type]
            return compat.plain_json(texts)  # type: ignore[return-value]
        except APIError as err:
            return error_response(Style.TEI, err)  # type: ignore[return-value]

    @bentoml.api(route="/rerank")
    async def rerank(
        self,
        query: Text,
        texts: Annotated[
            Texts | None, Field(description="TEI body: the texts to score (or `documents`).")
        ] = None,
        raw_scores: bool = False,
        return_text: bool = False,
        truncate: bool = True,
        documents: Annotated[
            list[Text | compat.DocumentText] | None,
            Field(
                description="Infinity / vLLM / Cohere-style body (instead of `texts`); "
                "answered in their `{results: [{index, relevance_score, document}]}` shape",
                max_length=settings.max_client_batch,
            ),
        ] = None,
        model: str | None = None,
        top_n: Annotated[int | None, Field(ge=1, strict=True)] = None,
        return_documents: bool = False,
    ) -> list[RerankHit] | DocumentsRerankResponse:
        """Score texts against a query with the cross-encoder, best first. With `texts`: TEI
        `/rerank` (a list of `{index, score, text?}`). With `documents`: the body and answer of
        Infinity's, vLLM's and litellm's `/rerank` (`results` with `relevance_score`)."""
        try:
            if (texts is None) == (documents is None):
                raise APIError(
                    422,
                    "send either `texts` (TEI) or `documents` (Infinity/Cohere style), not both",
                    param="texts" if texts is not None else "documents",
                    code="invalid_value",
                )
            reranker = self.engine.require_reranker()
            name = compat.check_model(model, reranker.info, "reranker")
            # Each body's own options are honoured in the other body too (never ignored).
            wants_text = return_text or return_documents
            if documents is not None:
                docs = [d if isinstance(d, str) else d.text for d in documents]
                scores = await self.engine.rerank(query, docs, truncate=truncate, field="documents")
                body = compat.documents_rerank(
                    scores, docs, name, top_n, wants_text, raw_scores=raw_scores
                )
                return compat.json_response(body, scores.stats)  # type: ignore[return-value]
            assert texts is not None
            scores = await self.engine.rerank(query, texts, truncate=truncate)
            tei = compat.tei_rerank(scores, texts, raw_scores=raw_scores, return_text=wants_text)
            return compat.json_response(tei[:top_n], scores.stats)  # type: ignore[return-value]
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
        dimensions: Annotated[int | None, Field(ge=1, strict=True)] = None,
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
        dimensions: Annotated[int | None, Field(ge=1, strict=True)] = None,
        user: str | None = None,
    ) -> OpenAIEmbeddingList:
        """Same as `/v1/embeddings`, for clients whose base URL has no `/v1`."""
        return await self._openai_embeddings(input, model, encoding_format, dimensions)

    # -- Cohere / Jina -----------------------------------------------------------------------------

    @bentoml.api(route="/v2/embed")
    async def cohere_embed_v2(
        self,
        texts: Texts,
        model: str | None = None,
        input_type: Annotated[
            Literal["search_document", "search_query", "classification", "clustering"] | None,
            Field(
                description="Selects the model's prompt for that role (e.g. `query`, "
                "`passage`) when it declares prompts; else the default prompt."
            ),
        ] = None,
        embedding_types: Annotated[
            list[Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]] | None,
            Field(min_length=1, description="Default: float."),
        ] = None,
        truncate: Annotated[
            Literal["NONE", "END"], Field(description="`START` is not supported.")
        ] = "END",
        output_dimension: Annotated[int | None, Field(ge=1, strict=True)] = None,
        max_tokens: Annotated[int | None, Field(ge=1, strict=True)] = None,
        priority: Annotated[int | None, Field(strict=True)] = None,
    ) -> CohereEmbedResponse:
        """Cohere v2 embed (`ClientV2.embed`): texts, with quantized types computed as Cohere
        documents them (see serving/cohere.py)."""
        try:
            name = compat.check_model(model, self.engine.embedder.info, "embedder")
            cohere.check_options(
                self.engine,
                input_type=input_type,
                truncate=truncate,
                output_dimension=output_dimension,
                max_tokens=max_tokens,
            )
            prompt = prompts.by_input_type(self.engine.embedder.info, input_type)
            result = await self.engine.embed(
                prompts.apply(prompt, texts),
                normalize=True,
                truncate=truncate != "NONE",
                field="texts",
            )
            body = cohere.embed_by_type(result, texts, embedding_types or ["float"])
            body["meta"]["model"] = name
            return compat.json_response(body, result.stats)  # type: ignore[return-value]
        except APIError as err:
            return error_response(Style.COHERE, err)  # type: ignore[return-value]

    @bentoml.api(route="/v2/rerank")
    async def cohere_rerank_v2(
        self,
        query: Text,
        documents: Texts,
        model: str | None = None,
        top_n: Annotated[int | None, Field(ge=1, strict=True)] = None,
        max_tokens_per_doc: Annotated[int | None, Field(ge=1, strict=True)] = None,
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
        top_n: Annotated[int | None, Field(ge=1, strict=True)] = None,
        return_documents: bool = False,
    ) -> RerankResponse:
        """Jina / Cohere v1 rerank: documents as strings or `{"text"}` objects.

        Cohere v1's `max_chunks_per_doc` is not declared, so it is refused (422, naming it) as
        an unknown field: documents over the model's limit are truncated, not split into chunks.
        """
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


_fields = fields_from_openapi(MLService.openapi_spec.asdict())


def _edge(app: Any, **options: Any) -> EdgeMiddleware:
    # The edge (key, size limit, error shapes) first, then the JSON and field checks.
    return EdgeMiddleware(RequestGuard(app, _fields.get), **options)


MLService.add_asgi_middleware(  # type: ignore[attr-defined]
    _edge,
    max_payload_bytes=settings.max_payload_bytes,
    api_key=settings.api_key,
    body_timeout_s=settings.body_timeout_s,
)
# Inside the edge: a bad X-Priority is answered only after the API key was checked.
MLService.add_asgi_middleware(PriorityMiddleware)  # type: ignore[attr-defined]
# Innermost of ours: after all the checks above, a valid body goes straight to the method.
MLService.add_asgi_middleware(FastPathMiddleware, service=MLService)  # type: ignore[attr-defined]
