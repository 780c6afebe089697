"""The ml-api's edge middleware on its own: a client that goes away cancels the work, a slow
body gets a 408, and the app's answer passes through, all without a server."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from serving.edge import EdgeMiddleware

pytestmark = pytest.mark.anyio

Message = dict[str, Any]


def _scope(path: str = "/embed") -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


class _Client:
    """The server side of one connection: the body, then (optionally) the client going away."""

    def __init__(self, body: bytes = b"{}", *, leaves: bool = False, sends_body: bool = True):
        self.body = body
        self.leaves = leaves
        self.sends_body = sends_body
        self.gone = asyncio.Event()
        self.sent: list[Message] = []
        self._body_sent = False

    async def receive(self) -> Message:
        if not self._body_sent and self.sends_body:
            self._body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if self.leaves:
            await self.gone.wait()
        else:
            await asyncio.Event().wait()  # a client that neither sends nor leaves
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    def json(self) -> Any:
        return orjson.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def _edge(app: Any, **kw: Any) -> EdgeMiddleware:
    return EdgeMiddleware(app, max_payload_bytes=kw.pop("limit", 1000), api_key=None, **kw)


async def test_client_leaving_cancels_the_app_and_the_request_ends_quietly() -> None:
    cancelled = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            await asyncio.sleep(30)  # the model pass the client no longer waits for
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client = _Client(leaves=True)
    call = asyncio.ensure_future(_edge(app)(_scope(), client.receive, client.send))
    await asyncio.sleep(0.05)
    client.gone.set()
    await asyncio.wait_for(call, 5)  # returns normally: nobody cancelled the server's task
    assert cancelled.is_set()
    assert client.sent == []
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_the_answer_passes_through_and_a_late_disconnect_cancels_nothing() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[1]"})

    client = _Client(leaves=True)
    client.gone.set()  # the disconnect is there as soon as the body is read
    await _edge(app)(_scope(), client.receive, client.send)
    assert client.status == 200
    assert client.json() == [1]


async def test_outside_cancellation_still_propagates() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(30)

    client = _Client()
    call = asyncio.ensure_future(_edge(app)(_scope(), client.receive, client.send))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_body_that_never_comes_gets_408_in_the_route_shape() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise AssertionError("unreachable: the body never arrives")

    client = _Client(sends_body=False)
    await asyncio.wait_for(
        _edge(app, body_timeout_s=0.1)(_scope("/v1/embeddings"), client.receive, client.send), 5
    )
    assert client.status == 408
    assert client.json()["error"]["code"] == "body_timeout"


async def test_a_body_over_the_limit_gets_413() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise AssertionError("unreachable: the body is over the limit")

    client = _Client(b"x" * 2000)
    await _edge(app, limit=1000)(_scope(), client.receive, client.send)
    assert client.status == 413
    assert client.json()["error_type"] == "PayloadTooLarge"
