"""The ml-api's HTTP edge, in front of BentoML: API key, payload limit, body-read deadline,
consistent error bodies, and no compute for clients that went away."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ragstack_common.http import bearer_matches
from serving.errors import APIError, error_response, payload_too_large, rewrite_error, style_for

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Open without a key (probes, metrics, the API docs); everything else needs it when one is set.
OPEN_PATHS = frozenset(
    {"/", "/health", "/readyz", "/livez", "/metrics", "/docs.json", "/schema.json"}
)
OPEN_PREFIXES = ("/static_content/", "/assets/")


# The body deadline grows by 1 s per this many bytes received (Apache mod_reqtimeout's MinRate):
# a large body on a slow link passes, a client trickling a byte a second does not.
BODY_MIN_RATE = 64 * 1024


class _PayloadTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


def body_timeout(received: int, timeout_s: float) -> APIError:
    return APIError(
        408,
        f"request body too slow: {received} bytes received before the deadline "
        f"(ML_API_BODY_TIMEOUT_S={timeout_s:g} plus 1 s per {BODY_MIN_RATE} bytes)",
        code="body_timeout",
    )


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_payload_bytes: int,
        api_key: str | None,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.max_payload_bytes = max_payload_bytes
        self.api_key = api_key or None
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        style = style_for(path)

        async def reply(err: APIError) -> None:
            await error_response(style, err)(scope, receive, send)

        # Open paths are pages and probes; POST / is TEI's embed (compute) and needs the key.
        is_open = _is_open(path) and scope.get("method") in ("GET", "HEAD")
        if self.api_key and not is_open and not self._authorized(scope):
            await reply(
                APIError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'")
            )
            return

        limit = self.max_payload_bytes
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await reply(payload_too_large(limit))
            return

        received = 0
        too_large = timed_out = False
        body_done = response_started = app_done = disconnected = False
        started = time.monotonic()
        # The app runs in this task (no task of its own): a request costs one extra task, the
        # disconnect watcher, and only once its body has been read.
        task = asyncio.current_task()
        assert task is not None
        watcher: asyncio.Task[None] | None = None

        async def cancel_on_disconnect() -> None:
            nonlocal disconnected
            # Once the body is read, the next message can only be the client going away.
            message = await receive()
            if message["type"] == "http.disconnect" and not response_started and not app_done:
                disconnected = True
                task.cancel()

        async def limited_receive() -> Message:
            nonlocal received, too_large, timed_out, body_done, watcher
            if body_done:
                return await receive()
            left = started + self.body_timeout_s + received / BODY_MIN_RATE - time.monotonic()
            try:
                # A timer on this task, not wait_for's extra task per message.
                async with asyncio.timeout(max(left, 0.001)):
                    message = await receive()
            except TimeoutError:
                timed_out = True  # BentoML turns the exception into a 500, replaced below
                raise _BodyTimeout from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # BentoML turns any exception into its own 500; remember why, so the
                    # error response can be replaced by the 413 below.
                    too_large = True
                    raise _PayloadTooLarge
                if not message.get("more_body"):
                    body_done = True
                    watcher = asyncio.ensure_future(cancel_on_disconnect())
            return message

        error_start: Message | None = None
        chunks: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal error_start, response_started
            if message["type"] == "http.response.start":
                response_started = True
                if message["status"] < 400:
                    await send(message)
                else:
                    error_start = message  # held back until the body is known
                return
            if error_start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            if too_large:
                await reply(payload_too_large(limit))
                return
            if timed_out:
                await reply(body_timeout(received, self.body_timeout_s))
                return
            await _send_error(send, error_start, b"".join(chunks), style)

        try:
            try:
                await self.app(scope, limited_receive, rewriting_send)
            finally:
                app_done = True  # from here on a disconnect cancels nothing
        except _PayloadTooLarge:
            if not response_started:
                await reply(payload_too_large(limit))
        except _BodyTimeout:
            if not response_started:
                await reply(body_timeout(received, self.body_timeout_s))
        except asyncio.CancelledError:
            if not disconnected:
                raise  # we ourselves are being cancelled
            task.uncancel()  # the client went away: the request simply ends
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    def _authorized(self, scope: Scope) -> bool:
        for k, v in scope.get("headers", []):
            if k.lower() == b"authorization":
                return bearer_matches(v.decode("latin-1"), self.api_key or "")
        return False


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or path.startswith("/docs")


async def _send_error(send: Send, start: Message, body: bytes, style: Any) -> None:
    status = start["status"]
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    rewritten = rewrite_error(status, body, style)
    if rewritten is not None:
        status, body, extra = rewritten
        headers = [(k, v) for k, v in headers if k.lower().decode() not in extra]
        headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
