"""Request checks BentoML does not make, in front of the POST routes of the ml-api.

- The body must be JSON. A `multipart/form-data` Content-Type without a boundary made BentoML
  answer 500; any body that is not JSON now gets a 415 saying what to send. A JSON body sent
  with another Content-Type (curl -d sends application/x-www-form-urlencoded) is accepted as JSON.
- Unknown top-level fields get a 422 naming them. BentoML (pydantic) would ignore them, and a
  client that believes it asked for something (`output_dimension`, `input_type`) would get
  something else without knowing. The accepted fields are those of the route's OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from serving.body import read_body, replaying
from serving.edge import ASGIApp, Receive, Scope, Send
from serving.errors import APIError, error_response, style_for

# Names other servers use for what we call something else, for a helpful 422.
HINTS = {
    "output_dimension": "dimensions",
    "output_dimensionality": "dimensions",
    "texts": "input",
    "sentences": "input",
}

FieldsFor = Callable[[str], frozenset[str] | None]


def fields_from_openapi(spec: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Top-level JSON fields of each POST route's request body, from an OpenAPI document."""
    schemas = spec.get("components", {}).get("schemas", {})
    out: dict[str, frozenset[str]] = {}
    for path, item in spec.get("paths", {}).items():
        body = (item.get("post") or {}).get("requestBody", {})
        schema = body.get("content", {}).get("application/json", {}).get("schema")
        if not schema:
            continue
        if "$ref" in schema:
            schema = schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
        out[path] = frozenset(schema.get("properties", {}))
    return out


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")


class RequestGuard:
    def __init__(self, app: ASGIApp, fields_for: FieldsFor) -> None:
        self.app = app
        self.fields_for = fields_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        allowed = self.fields_for(path)
        if allowed is None:
            await self.app(scope, receive, send)
            return

        async def reply(err: APIError) -> None:
            await error_response(style_for(path), err)(scope, receive, send)

        body = await read_body(receive)
        if body is None:
            return  # the client went away before sending its body
        headers = list(scope.get("headers", []))
        content_type = next((v.decode("latin-1") for k, v in headers if k == b"content-type"), "")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            if not _is_json(content_type):
                await reply(
                    APIError(
                        415,
                        f"unsupported Content-Type {content_type!r}: send a JSON body with "
                        "Content-Type: application/json",
                        code="unsupported_media_type",
                    )
                )
                return
            data = None  # BentoML's own invalid-JSON error (rewritten to a 422) follows
        if isinstance(data, dict):
            unknown = [k for k in data if k not in allowed]
            if unknown:
                await reply(_unknown_fields(unknown, allowed))
                return
        if data is not None and not _is_json(content_type):
            # JSON sent under another media type: let BentoML read it as the JSON it is.
            headers = [(k, v) for k, v in headers if k != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            scope = {**scope, "headers": headers}

        await self.app(scope, replaying(body, receive), send)


def _unknown_fields(unknown: list[str], allowed: frozenset[str]) -> APIError:
    parts = []
    for k in unknown[:5]:
        hint = HINTS.get(k)
        parts.append(f"`{k}`" + (f" (did you mean `{hint}`?)" if hint in allowed else ""))
    return APIError(
        422,
        f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(parts)}; this route "
        f"accepts: {', '.join(sorted(allowed))}",
        param=unknown[0],
        code="unknown_field",
    )
