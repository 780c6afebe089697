"""Error bodies in the shape each API family's clients expect.

TEI routes answer `{"error", "error_type"}`, OpenAI routes `{"error": {"message", "type", "param",
"code"}}` (the openai client only raises its typed errors for that envelope), Cohere/Jina rerank
routes `{"message"}`. BentoML itself answers request-validation failures with a 400 in its own
shape; `serving/edge.py` rewrites those into a 422 in the route's shape, naming the field.
"""

from __future__ import annotations

import re
from enum import StrEnum

import orjson
from starlette.responses import Response

from ragstack_common.http import retry_after_header


class Style(StrEnum):
    TEI = "tei"
    OPENAI = "openai"
    COHERE = "cohere"


OPENAI_PATHS = ("/v1/embeddings", "/embeddings")
COHERE_PATHS = ("/v1/rerank", "/v2/rerank", "/v2/embed")

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def style_for(path: str) -> Style:
    if path in OPENAI_PATHS:
        return Style.OPENAI
    if path in COHERE_PATHS:
        return Style.COHERE
    return Style.TEI


class APIError(Exception):
    """An error the client can act on: status, message, and the field it concerns."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s


def error_body(
    style: Style, status: int, message: str, param: str | None, code: str | None
) -> dict:
    if style is Style.OPENAI:
        return {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES.get(status, "api_error"),
                "param": param,
                "code": code,
            }
        }
    if style is Style.COHERE:
        return {"message": message}
    error_type = {
        401: "Unauthorized",
        404: "NotFound",
        413: "PayloadTooLarge",
        429: "Overloaded",
        503: "Unhealthy",
    }.get(status, "Validation")
    return {"error": message, "error_type": error_type}


def error_response(style: Style, err: APIError) -> Response:
    headers = retry_after_header(err.retry_after_s) if err.retry_after_s is not None else {}
    return Response(
        orjson.dumps(error_body(style, err.status, err.message, err.param, err.code)),
        status_code=err.status,
        media_type="application/json",
        headers=headers,
    )


_UNION_TAG = re.compile(r"[\[\]]|^(constrained-)?(str|int|float|bool|list|dict)$|^function-")
_TYPE_ERRORS = {"string_type", "list_type", "int_type", "int_parsing", "dict_type", "model_type"}


def _describe_validation(detail: list[dict]) -> tuple[str, str | None]:
    """'inputs[3]: String should have at least 1 character' from pydantic's error list."""
    # A union reports one error per member; the type mismatches of the members the value
    # was not meant for are noise when a more specific error exists.
    specific = [e for e in detail if e.get("type") not in _TYPE_ERRORS] or detail
    parts: list[str] = []
    first_param = None
    for e in specific[:5]:
        field = ""
        for x in e.get("loc", ()):
            if x == "body" or (isinstance(x, str) and _UNION_TAG.search(x)):
                continue
            field += f"[{x}]" if isinstance(x, int) or str(x).isdigit() else f".{x}"
        field = field.lstrip(".") or "body"
        first_param = first_param or field.split("[")[0].split(".")[0]
        msg = e.get("msg", "invalid value")
        if e.get("type") == "string_pattern_mismatch":  # the only pattern: Text's r"\S"
            msg = "must contain a non-space character"
        part = f"{field}: {msg}"
        if part not in parts:
            parts.append(part)
    return "; ".join(parts), first_param


def rewrite_error(
    status: int, body: bytes, style: Style
) -> tuple[int, bytes, dict[str, str]] | None:
    """BentoML-generated error -> our shape. None when the body is already ours."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):  # BentoML wraps 4xx in a list
        data = data[0]
    if status == 400 and isinstance(data, dict) and isinstance(data.get("detail"), list):
        message, param = _describe_validation(data["detail"])
        new = error_body(style, 422, message, param, "invalid_value")
        return 422, orjson.dumps(new), {}
    if status == 400 and isinstance(data, dict) and "error" in data and "error_type" not in data:
        msg = str(data["error"])
        if "JSON" in msg or "json" in msg or "Expecting" in msg:
            msg = f"request body is not valid JSON: {msg}"
        return 422, orjson.dumps(error_body(style, 422, msg, None, "invalid_json")), {}
    if (
        status == 503
        and isinstance(data, dict)
        and "error_type" not in data
        and "message" not in data
    ):
        msg = "the server is overloaded or not ready, retry later"
        return 503, orjson.dumps(error_body(style, 503, msg, None, None)), {"retry-after": "1"}
    if status == 500:
        msg = "internal error while processing the request; see the ml-api log"
        return 500, orjson.dumps(error_body(style, 500, msg, None, None)), {}
    return None


def payload_too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"request body exceeds the {limit} byte limit (ML_API_MAX_PAYLOAD_BYTES)",
        code="payload_too_large",
    )
