"""A shorter way through BentoML for the ml-api's POST routes, for requests that validate.

Profiled at 64 clients x one short text (event-loop thread CPU): after BentoML's outer
middlewares (metrics, tracing, timeout, concurrency: all still run), a request went through
Starlette's exception middleware, BentoML's request context, the router (a regex per route),
`api_endpoint_wrapper` and `api_endpoint`, which per request import modules, build an
`inspect.signature` of the method and trip a pydantic deprecation warning. Going past them
took the event loop's CPU per request from about 1.1 to 0.8 ms.

Here a POST to an API route whose body validates against the route's input model (the same
`model_validate_json` BentoML's JSON serde calls) calls the method directly and sends its
answer with the headers BentoML adds. Everything else goes the usual way, untouched: a body
that does not validate (so BentoML's own 400 and log line, which the edge rewrites, stay as
they are), other methods and paths, other media types, and all requests while the service is
not instantiated yet or when CORS is on (BentoML's CORS middleware sits inside ours).
A method that raises is answered as `api_endpoint_wrapper` answers it.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from _bentoml_sdk.io_models import ARGS, KWARGS
from _bentoml_sdk.service import get_current_service
from bentoml._internal.context import trace_context
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving.body import read_body, replaying
from serving.edge import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

# Media types BentoML answers with another serde than JSON (`_bentoml_impl.serde.ALL_SERDE`);
# anything else, or no Content-Type, is parsed as JSON there.
_NOT_JSON_SERDE = frozenset(
    {"application/vnd.bentoml+pickle", "multipart/form-data", "application/x-www-form-urlencoded"}
)
_UNEXPECTED = "An unexpected error has occurred, please check the server log."


@dataclass(frozen=True)
class _Route:
    name: str
    method: Any  # _bentoml_sdk.method.APIMethod
    fields: tuple[str, ...]


def fast_routes(service: Any) -> dict[str, _Route]:
    """The service's API routes that can be called directly: plain async methods, keyword
    inputs, no context parameter, no batching, tasks or streams."""
    out: dict[str, _Route] = {}
    prefix = getattr(service, "path_prefix", None) or ""
    for name, method in service.apis.items():
        spec = method.input_spec
        if (
            method.batchable
            or method.is_task
            or method.is_stream
            or method.ctx_param is not None
            or getattr(spec, "__root_input__", False)
            or getattr(spec, "multipart_fields", None)
            or not inspect.iscoroutinefunction(method.func)
            or {ARGS, KWARGS} & set(spec.model_fields)
        ):
            continue
        path = (prefix.rstrip("/") + "/" + method.route.lstrip("/")) if prefix else method.route
        out[path] = _Route(name, method, tuple(spec.model_fields))
    return out


class FastPathMiddleware:
    def __init__(self, app: ASGIApp, service: Any) -> None:
        self.app = app
        self.service = service
        self.routes = fast_routes(service)
        self._headers: dict[str, Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope.get("method") != "POST" or not self._json_serde(scope):
            await self.app(scope, receive, send)
            return
        instance = _current_instance()
        if instance is None or self._cors_enabled():
            await self.app(scope, receive, send)
            return

        body = await read_body(receive)
        if body is None:
            return  # the client went away before sending its body
        try:
            data = route.method.input_spec.model_validate_json(body or b"{}")
        except ValidationError:
            # BentoML validates again and answers (and logs) its own way.
            await self.app(scope, replaying(body, receive), send)
            return

        kwargs = {k: getattr(data, k) for k in route.fields}
        try:
            output = await route.method.func(instance, **kwargs)
            if not isinstance(output, Response):
                from _bentoml_impl.serde import ALL_SERDE

                serde = ALL_SERDE["application/json"]()
                output = await route.method.output_spec.to_http_response(output, serde)
            response = output
        except Exception as exc:  # what api_endpoint_wrapper answers
            response = _error_response(exc, Request(scope))
        self._add_headers(response)
        await response(scope, receive, send)

    @staticmethod
    def _json_serde(scope: Scope) -> bool:
        for k, v in scope.get("headers", []):
            if k == b"content-type":
                media = v.decode("latin-1").split(";")[0].strip()
                return media not in _NOT_JSON_SERDE
        return True

    def _cors_enabled(self) -> bool:
        return bool(self._settings()["cors"])

    def _settings(self) -> dict[str, Any]:
        if self._headers is None:
            from bentoml._internal.container import BentoMLContainer

            self._headers = {
                "cors": BentoMLContainer.http.cors.enabled.get(),
                "format": BentoMLContainer.logging_formatting.get(),
                "trace_id": BentoMLContainer.http.response.trace_id.get(),
                "server": f"BentoML Service/{self.service.name}",
            }
        return self._headers

    def _add_headers(self, response: Response) -> None:
        # As ServiceAppFactory._add_response_headers.
        settings = self._settings()
        response.headers["Server"] = settings["server"]
        if trace_context.request_id is not None:
            response.headers["X-BentoML-Request-ID"] = format(
                trace_context.request_id, settings["format"]["span_id"]
            )
        if settings["trace_id"] and trace_context.trace_id is not None:
            response.headers["X-BentoML-Trace-ID"] = format(
                trace_context.trace_id, settings["format"]["trace_id"]
            )


def _current_instance() -> Any:
    try:
        return get_current_service()
    except Exception:  # not instantiated yet (or already shut down)
        return None


def _error_response(exc: Exception, request: Request) -> Response:
    """The answer of BentoML's `api_endpoint_wrapper` to an exception from the method."""
    from bentoml._internal.server.http_app import log_exception
    from bentoml.exceptions import BentoMLException

    log_exception(request)
    if isinstance(exc, ValidationError):
        data = {
            "error": f"{exc.error_count()} validation error for {exc.title}",
            "detail": exc.errors(include_context=False, include_input=False),
        }
        return JSONResponse(data, status_code=HTTPStatus.BAD_REQUEST)
    if isinstance(exc, BentoMLException):
        status = exc.error_code.value
        if status in (401, 403):
            detail: Any = {"error": "Authorization error"}
        elif status >= 500:
            detail = {"error": _UNEXPECTED}
        else:
            detail = ({"error": str(exc)},)
        return JSONResponse(detail, status_code=status)
    return JSONResponse({"error": _UNEXPECTED}, status_code=500)
