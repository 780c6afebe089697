"""The fast path past BentoML's request handling answers exactly as BentoML does: the same
status, headers and body for valid bodies, invalid ones and methods that raise; and valid
bodies really take it (BentoML's `api_endpoint` is not called)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Annotated, Any

import bentoml
import orjson
import pytest
from _bentoml_impl.server.app import ServiceAppFactory
from pydantic import Field
from starlette.responses import Response

from serving import fastpath
from serving.fastpath import FastPathMiddleware

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


@bentoml.service(name="fastpath-test")
class Svc:
    @bentoml.api(route="/echo")
    async def echo(
        self,
        inputs: Annotated[str | list[str], Field(min_length=1)],
        scale: Annotated[int, Field(ge=1)] = 1,
        flag: bool = False,
    ) -> list[str]:
        body = orjson.dumps({"inputs": inputs, "scale": scale, "flag": flag})
        return Response(body, media_type="application/json", headers={"x-extra": "1"})  # type: ignore[return-value]

    @bentoml.api(route="/plain")
    async def plain(self, n: int = 1) -> list[int]:
        return list(range(n))  # not a Response: BentoML's output serialization

    @bentoml.api(route="/boom")
    async def boom(self, n: int = 1) -> list[int]:
        raise Boom("the method failed")


Svc.add_asgi_middleware(FastPathMiddleware, service=Svc)  # type: ignore[attr-defined]


async def _call(app: Any, path: str, body: bytes, ctype: str | None) -> tuple[int, dict, bytes]:
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [(b"host", b"test")] + ([(b"content-type", ctype.encode())] if ctype else [])
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 3000),
        "state": {},
    }
    await app(scope, receive, send)
    start = sent[0]
    hdrs = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    hdrs.pop("x-bentoml-request-id", None)  # a span id: differs per request
    return start["status"], hdrs, b"".join(m.get("body", b"") for m in sent[1:])


CASES = [
    ("/echo", b'{"inputs": "a"}', "application/json"),
    (
        "/echo",
        b'{"inputs": ["a", "b"], "scale": 3, "flag": true}',
        "application/json; charset=utf-8",
    ),
    ("/echo", b'{"inputs": "a"}', None),
    ("/echo", b'{"inputs": ""}', "application/json"),
    ("/echo", b'{"inputs": "a", "scale": 0}', "application/json"),
    ("/echo", b'{"inputs": "a"', "application/json"),
    ("/echo", b"", "application/json"),
    ("/echo/", b'{"inputs": "a"}', "application/json"),
    ("/plain", b'{"n": 3}', "application/json"),
    ("/boom", b"{}", "application/json"),
]


@functools.cache
def _asgi() -> Any:
    # One app per process: BentoML's metrics are registered once per app.
    return Svc.to_asgi()


@pytest.fixture
async def app() -> AsyncIterator[Any]:
    asgi = _asgi()
    async with asgi.router.lifespan_context(asgi):
        yield asgi


async def test_answers_match_bentoml(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for path, body, ctype in CASES:
        got = await _call(app, path, body, ctype)
        with monkeypatch.context() as m:
            # No service instance: the fast path steps aside and BentoML answers.
            m.setattr(fastpath, "_current_instance", lambda: None)
            expected = await _call(app, path, body, ctype)
        assert got == expected, (path, body, ctype)


async def test_valid_bodies_skip_bentoml_request_handling(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    on = app
    calls: list[str] = []
    original = ServiceAppFactory.api_endpoint

    async def counting(self: Any, name: str, request: Any) -> Any:
        calls.append(name)
        return await original(self, name, request)

    monkeypatch.setattr(ServiceAppFactory, "api_endpoint", counting)
    status, _, body = await _call(on, "/echo", b'{"inputs": "a"}', "application/json")
    assert (status, orjson.loads(body)) == (200, {"inputs": "a", "scale": 1, "flag": False})
    assert calls == []
    status, _, _ = await _call(on, "/echo", b'{"inputs": ""}', "application/json")
    assert status == 400 and calls == ["echo"]  # invalid: BentoML's own answer
