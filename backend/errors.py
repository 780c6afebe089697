"""One error shape for every response: `{"detail": "<what is wrong, naming field and limit>"}`.

Validation errors also carry `errors: [{"field", "message"}]`. An unavailable dependency (ml-api,
Qdrant, parser processes) is a 503 with Retry-After. Unexpected exceptions are logged with their
traceback and answered without one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from backend.ingest.isolate import ParserUnavailable
from backend.mlapi import MLAPIError, MLAPIUnavailable
from backend.store import StoreError
from ragstack_common.http import retry_after_header

log = logging.getLogger("ragstack.backend")
PARSER_RETRY_AFTER_S = 5.0
REGISTRY_RETRY_AFTER_S = 30.0
TOO_DEEP = "JSON nested too deeply (the limit is about 1000 levels)"


def _field(loc: Sequence[Any], prefix: str | None = None) -> str:
    # Drop the request part ("body", "query", ...) and pydantic's union-member names ("list[...]").
    parts = [str(x) for x in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    parts = [p for p in parts if not any(c in p for c in "[]") and not p.startswith("function-")]
    if prefix:
        parts.insert(0, prefix)
    return ".".join(parts) or "body"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def validation_items(errors: Sequence[Any], prefix: str | None = None) -> list[dict[str, str]]:
    return [{"field": _field(e.get("loc", ()), prefix), "message": _message(e)} for e in errors]


def validation_detail(errors: Sequence[Any], prefix: str | None = None) -> str:
    items = validation_items(errors, prefix)
    return "; ".join(f"{i['field']}: {i['message']}" for i in items[:5])


def unavailable(detail: str, after: float | None) -> JSONResponse:
    headers = retry_after_header(after) if after is not None else None
    return JSONResponse({"detail": detail}, status_code=503, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return JSONResponse(
            {"detail": validation_detail(errors), "errors": validation_items(errors)},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            # FastAPI's body parsing hit the JSON decoder's recursion limit.
            return JSONResponse({"detail": f"body: {TOO_DEEP}"}, status_code=422)
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI could not decode the body at all (e.g. bytes that are not UTF-8): the same
            # 422 as any other unreadable body, the status the routes document.
            return JSONResponse({"detail": "body: not valid UTF-8 JSON"}, status_code=422)
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(MLAPIError)
    async def _mlapi(request: Request, exc: MLAPIError) -> JSONResponse:
        if isinstance(exc, MLAPIUnavailable):
            return unavailable(exc.message, exc.retry_after)
        return JSONResponse({"detail": exc.message}, status_code=502)

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        return unavailable(str(exc), exc.retry_after)

    @app.exception_handler(sqlite3.OperationalError)
    async def _registry(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # The registry cannot be written: the disk is full or failing. Nothing was changed.
        log.warning("registry error on %s %s: %s", request.method, request.url.path, exc)
        return unavailable(
            f"the document registry cannot be written ({exc}); retry later",
            REGISTRY_RETRY_AFTER_S,
        )

    @app.exception_handler(ParserUnavailable)
    async def _parser(request: Request, exc: ParserUnavailable) -> JSONResponse:
        return unavailable(str(exc), PARSER_RETRY_AFTER_S)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client went away mid-body (an aborted upload): nobody reads this answer, and it
        # is not a server error worth a traceback in the log.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "client disconnected"}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the backend log"}, status_code=500)
