"""Overload and size guards: request-body limits (413) and the concurrent-upload gate (429).

The body limit is an ASGI middleware so that it also holds for chunked bodies that declare no
Content-Length: it counts bytes as the app reads them and stops the read past the limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import retry_after
from backend.settings import MiB, Settings

# Every JSON route but the upload takes small bodies (a query is at most a few tens of KiB).
JSON_BODY_LIMIT = 1 * MiB
UPLOAD_BUSY_RETRY_AFTER_S = 2.0
QUEUE_FULL_RETRY_AFTER_S = 30.0


class BodyTooLarge(HTTPException):
    # An HTTPException, so FastAPI's own body reading passes it through as is (not as a 400).
    def __init__(self, size: str, limit: int, setting: str) -> None:
        super().__init__(413, f"request body is {size} bytes; the limit is {limit} ({setting})")


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/documents"):
            return self.settings.max_request_bytes, "MAX_REQUEST_BYTES"
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

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"more than {limit}", limit, setting)
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
                headers=retry_after(UPLOAD_BUSY_RETRY_AFTER_S),
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
        headers=retry_after(QUEUE_FULL_RETRY_AFTER_S),
    )
