"""The ml-api's OpenAPI document: BentoML's, with each route's real error responses.

BentoML documents every route's errors as `{"error": str}` (400/404/500). Our routes answer in
their API family's shape (serving/errors.py) and with more statuses (401, 413, 422, 429, 503),
so clients and schema-driven tests see what the server really sends.
"""

from __future__ import annotations

import copy
from typing import Any

from serving.errors import Style, style_for
from serving.schemas import DocumentsRerankResponse

_SCHEMAS: dict[str, dict[str, Any]] = {
    "TEIError": {
        "type": "object",
        "required": ["error", "error_type"],
        "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True},
                },
            }
        },
    },
    "CohereError": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string"}},
    },
}
_BY_STYLE = {Style.TEI: "TEIError", Style.OPENAI: "OpenAIError", Style.COHERE: "CohereError"}
_STATUSES = {
    "401": "Missing or invalid API key (when ML_API_KEY is set)",
    "404": "Unknown model name",
    "413": "Payload, item count or input length over a limit",
    "415": "The body is not JSON",
    "422": "Invalid input or an unknown field; the message names the field",
    "429": "At capacity; retry after the Retry-After header",
    "500": "Internal error",
    "503": "Not ready, or no reranker loaded",
}


_PRIORITY_PARAMETER: dict[str, Any] = {
    "name": "X-Priority",
    "in": "header",
    "required": False,
    "description": "`interactive` (the default) or `bulk`. Bulk work (e.g. document ingestion) "
    "is served after interactive work but keeps a share of the forward passes, and has its own "
    "small queue bound (ML_API_MAX_QUEUED_BULK_TOKENS): past it, 429 with Retry-After.",
    "schema": {"type": "string", "enum": ["interactive", "bulk"], "default": "interactive"},
}


def with_error_responses(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
    for path, item in spec.get("paths", {}).items():
        post = item.get("post")
        if post is None:
            continue
        # Unknown fields are refused (serving/guard.py); say so, for clients and fuzzers.
        request = post.get("requestBody", {})
        body = request.get("content", {}).get("application/json", {})
        if body.get("schema", {}).get("required") or path == "/rerank":
            request["required"] = True  # no body is a 422, not a valid request
        if "properties" in body.get("schema", {}):
            body["schema"]["additionalProperties"] = False
            for prop in body["schema"]["properties"].values():
                # `X | None = None`: BentoML drops the `null` the server accepts.
                if "default" in prop and prop["default"] is None and "$ref" not in prop:
                    prop["nullable"] = True
            if path == "/rerank":  # a TEI body or a documents-style body, not both
                # (a `null` one counts as absent, as the server reads it)
                body["schema"]["oneOf"] = [
                    {"required": [k], "properties": {k: {"type": "array"}}}
                    for k in ("texts", "documents")
                ]
                documents = body["schema"]["properties"].get("documents", {})
                for member in documents.get("anyOf", [documents]):
                    if member.get("type") == "array":  # an empty list is refused, like `texts`
                        member["minItems"] = 1
        if path == "/rerank":
            _rerank_answers_both_shapes(spec, post)
        ref = {"$ref": f"#/components/schemas/{_BY_STYLE[style_for(path)]}"}
        post.setdefault("parameters", []).append(_PRIORITY_PARAMETER)
        responses = post.setdefault("responses", {})
        for status in [s for s in responses if str(s) != "200"]:
            del responses[status]
        for status, description in _STATUSES.items():
            responses[status] = {
                "description": description,
                "content": {"application/json": {"schema": ref}},
            }
    return spec


def _rerank_answers_both_shapes(spec: dict[str, Any], post: dict[str, Any]) -> None:
    """/rerank answers a TEI body with a list and a documents-style body with Infinity's object;
    BentoML documents only the first member of the return type's union."""
    doc = DocumentsRerankResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = spec["components"]["schemas"]
    schemas.update(doc.pop("$defs", {}))
    schemas["DocumentsRerankResponse"] = doc
    responses = post.get("responses", {})
    ok = responses.get("200") or responses.get(200) or {}  # type: ignore[call-overload]
    for media in ok.get("content", {}).values():
        if "schema" in media:
            media["schema"] = {
                "oneOf": [media["schema"], {"$ref": "#/components/schemas/DocumentsRerankResponse"}]
            }


def with_model_limits(
    spec: dict[str, Any], *, dimension: int, max_length: int, vocab_size: int, prompts: list[str]
) -> dict[str, Any]:
    """Constraints that depend on the loaded model, so that what the schema allows the server
    accepts (and schema-driven clients and fuzzers know the real limits)."""
    spec = copy.deepcopy(spec)
    for item in spec.get("paths", {}).values():
        body = (item.get("post") or {}).get("requestBody", {})
        props = body.get("content", {}).get("application/json", {}).get("schema", {})
        props = props.get("properties", {})
        for name in ("dimensions", "output_dimension"):
            if name in props:  # only the model's own size (no Matryoshka cut)
                props[name] = {**props[name], "enum": [dimension]}
        if "max_tokens" in props:
            props["max_tokens"] = {**props["max_tokens"], "minimum": max_length}
        if "prompt_name" in props:
            props["prompt_name"] = (
                {**props["prompt_name"], "enum": prompts}
                if prompts
                else {"type": "null", "description": "This model declares no prompts."}
            )
        ids = props.get("ids", {}).get("items")
        if isinstance(ids, dict) and ids.get("type") == "integer":
            ids["maximum"] = vocab_size - 1
    return spec
