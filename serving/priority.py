"""Which batcher lane a request's work goes to, from its `X-Priority` header.

`X-Priority: bulk` marks background work (document ingestion): it is served after interactive
work and is bounded by its own, small queue limit, so a bulk caller gets 429 + Retry-After as
backpressure. Anything unmarked (or `X-Priority: interactive`) is interactive, so third-party
clients keep the fast path without knowing about lanes. The lane travels from this ASGI
middleware to `Engine` in a context variable, so no route signature changes.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import get_args

from serving.batcher import LANES, Lane
from serving.edge import ASGIApp, Receive, Scope, Send
from serving.errors import APIError, error_response, style_for

HEADER = "X-Priority"
_HEADER_KEY = HEADER.lower().encode()
_LANE: ContextVar[Lane] = ContextVar("ml_api_lane", default="interactive")
assert set(get_args(Lane)) == set(LANES)


def current_lane() -> Lane:
    return _LANE.get()


class PriorityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers", []) if k.lower() == _HEADER_KEY), None)
        lane: str = "interactive" if raw is None else raw.decode("latin-1").strip().lower()
        if lane not in LANES:
            err = APIError(
                422,
                f"header {HEADER} must be one of {', '.join(LANES)}; got {lane[:40]!r}",
                param=HEADER,
                code="invalid_priority",
            )
            await error_response(style_for(scope.get("path", "")), err)(scope, receive, send)
            return
        token = _LANE.set(lane)  # type: ignore[arg-type]
        try:
            await self.app(scope, receive, send)
        finally:
            _LANE.reset(token)
