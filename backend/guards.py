"""Overload and size guards: request-body limits (413), body-read deadlines (408) and the
concurrent-upload gate (429).

The body guard is an ASGI middleware so that it also holds for chunked bodies that declare no
Content-Length: it counts bytes as the app reads them and stops the read past the limit, or when
the body arrives slower than BODY_MIN_RATE after BODY_TIMEOUT_S (the rule of Apache's
mod_reqtimeout: a deadline extended by each byte received, so a large upload on a slow link
passes and a client trickling one byte a second does not).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.settings import MiB, Settings
from ragstack_common.http import retry_after_header

# Every JSON route but the upload takes small bodies (a query is at most a few tens of KiB).
JSON_BODY_LIMIT = 1 * MiB
UPLOAD_BUSY_RETRY_AFTER_S = 2.0
QUEUE_FULL_RETRY_AFTER_S = 30.0
# A JSON upload carries one document: its text plus a title and metadata.
JSON_UPLOAD_OVERHEAD = 1 * MiB


class BodyReadError(HTTPException):
    """Reading the request body was stopped. An HTTPException, so FastAPI's own body reading
    passes it through as is (not as a 400)."""


class BodyTooLarge(BodyReadError):
    def __init__(self, size: str, limit: int, setting: str) -> None:
        super().__init__(413, f"request body is {size} bytes; the limit is {limit} ({setting})")


class BodyTimeout(BodyReadError):
    def __init__(self, received: int, settings: Settings) -> None:
        super().__init__(
            408,
            f"request body too slow: {received} bytes received before the deadline"
            f" (BODY_TIMEOUT_S={settings.body_timeout_s:g} plus 1 s per BODY_MIN_RATE="
            f"{settings.body_min_rate} bytes)",
            # The rest of the body is not read: the connection cannot be reused.
            headers={"Connection": "close"},
        )


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/documents"):
            request_limit = self.settings.max_request_bytes, "MAX_REQUEST_BYTES"
            ctype = dict(scope["headers"]).get(b"content-type", b"").lower()
            if ctype.startswith(b"multipart/"):
                return request_limit
            # A JSON body is parsed whole in memory: at most one document's worth of it.
            one_doc = self.settings.max_upload_bytes + JSON_UPLOAD_OVERHEAD
            return min(request_limit, (one_doc, "MAX_UPLOAD_BYTES + 1 MiB for a JSON upload"))
        return JSON_BODY_LIMIT, "fixed for JSON requests"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, BodyTooLarge(declared.decode(), limit, setting).detail)
            return
        received = 0
        started: float | None = None
        body_done = False
        timeout, rate = self.settings.body_timeout_s, self.settings.body_min_rate

        async def limited() -> Message:
            nonlocal received, started, body_done
            if body_done:  # later receives only wait for a disconnect: no deadline
                return await receive()
            if started is None:
                started = time.monotonic()
            left = started + timeout + received / rate - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.001))
            except TimeoutError:
                raise BodyTimeout(received, self.settings) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"more than {limit}", limit, setting)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)


async def _send_413(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The unread body is not drained: the server closes the connection after this response.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UploadGate:
    """At most MAX_CONCURRENT_UPLOADS upload requests are received and checked at once: each
    holds a request body, spooled files and possibly a parser process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0  # only touched on the event loop: no lock needed

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.active >= self.limit:
            raise HTTPException(
                429,
                f"too many uploads in progress ({self.active}; the limit is {self.limit},"
                " MAX_CONCURRENT_UPLOADS); retry later",
                headers=retry_after_header(UPLOAD_BUSY_RETRY_AFTER_S),
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


def queue_full(pending: int, adding: int, limit: int) -> HTTPException:
    return HTTPException(
        429,
        f"the ingestion queue is full: {pending} documents pending, {adding} more would exceed"
        f" the limit of {limit} (MAX_PENDING_DOCUMENTS); retry later",
        headers=retry_after_header(QUEUE_FULL_RETRY_AFTER_S),
    )
