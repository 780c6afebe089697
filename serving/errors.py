"""Error bodies in the shape each API family's clients expect, and the HTTP edge middleware.

TEI routes answer `{"error", "error_type"}`, OpenAI routes `{"error": {"message", "type", "param",
"code"}}` (the openai client only raises its typed errors for that envelope), Cohere/Jina rerank
routes `{"message"}`. BentoML itself answers request-validation failures with a 400 in its own
shape; the middleware rewrites those into a 422 in the route's shape, naming the field.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Awaitable, Callable, MutableMapping
from enum import StrEnum
from typing import Any

import orjson
from starlette.responses import Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Style(StrEnum):
    TEI = "tei"
    OPENAI = "openai"
    COHERE = "cohere"


OPENAI_PATHS = ("/v1/embeddings", "/embeddings")
COHERE_PATHS = ("/v1/rerank", "/v2/rerank")
# Inference routes: behind the API key, counted by the size limit.
PROTECTED_PATHS = (
    "/embed",
    "/rerank",
    "/tokenize",
    "/tokenizer",
    "/info",
    *OPENAI_PATHS,
    *COHERE_PATHS,
)
OPEN_PATHS = ("/health", "/readyz", "/livez", "/metrics", "/docs", "/docs.json", "/")

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
    headers = {}
    if err.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_s)))
    return Response(
        orjson.dumps(error_body(style, err.status, err.message, err.param, err.code)),
        status_code=err.status,
        media_type="application/json",
        headers=headers,
    )


def _describe_validation(detail: list[dict]) -> tuple[str, str | None]:
    """'inputs.3: String should have at least 1 character' from pydantic's error list."""
    parts = []
    first_param = None
    for e in detail[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body",)]
        # Union members add their type names to loc ("inputs.list[str].3"); keep field path only.
        loc = [x for x in loc if not any(c in x for c in "[]")]
        field = ".".join(loc) or "body"
        first_param = first_param or (loc[0] if loc else None)
        parts.append(f"{field}: {e.get('msg', 'invalid value')}")
    return "; ".join(parts), first_param


def _rewrite(status: int, body: bytes, style: Style) -> tuple[int, bytes, dict[str, str]] | None:
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


class EdgeMiddleware:
    """Payload limit, API key, and consistent error bodies, before BentoML sees the request."""

    def __init__(self, app: ASGIApp, max_payload_bytes: int, api_key: str | None) -> None:
        self.app = app
        self.max_payload_bytes = max_payload_bytes
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        style = style_for(path)
        protected = path in PROTECTED_PATHS

        async def reply(err: APIError) -> None:
            await error_response(style, err)(scope, receive, send)

        if protected and self.api_key and not self._authorized(scope):
            await reply(
                APIError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'")
            )
            return

        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        limit = self.max_payload_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await reply(_too_large(limit))
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _PayloadTooLarge
            return message

        start: Message | None = None
        chunks: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    await send(message)
                    return
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            status = start["status"]
            out_headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            rewritten = _rewrite(status, body, style)
            if rewritten is not None:
                status, body, extra = rewritten
                out_headers = [(k, v) for k, v in out_headers if k.lower().decode() not in extra]
                out_headers += [(k.encode(), v.encode()) for k, v in extra.items()]
            out_headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            await send({"type": "http.response.body", "body": body})

        try:
            await self.app(scope, limited_receive, rewriting_send)
        except _PayloadTooLarge:
            await reply(_too_large(limit))

    def _authorized(self, scope: Scope) -> bool:
        for k, v in scope.get("headers", []):
            if k.lower() == b"authorization":
                scheme, _, token = v.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    token.strip().encode(), (self.api_key or "").encode()
                )
        return False


class _PayloadTooLarge(Exception):
    pass


def _too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"request body exceeds the {limit} byte limit (ML_API_MAX_PAYLOAD_BYTES)",
        code="payload_too_large",
    )
