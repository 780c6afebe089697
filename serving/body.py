"""Reading a request's body once inside an ASGI middleware and handing it on: the guard and the
fast path both need the whole body before deciding, and the app behind them must still be able
to read it."""

from __future__ import annotations

from serving.edge import Message, Receive


async def read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client went away before sending all of it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that first hands out `body` (already read), then the client's own messages
    (a disconnect, for the app's watcher)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
