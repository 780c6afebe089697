"""A small async httpx client of the backend API (documents and query), used by `ragctl ingest`
and `ragctl query`.

Settings come from the same places as the backend's: environment variables (no prefix) and an
optional `.env` file — `BACKEND_URL` (default http://127.0.0.1:8000) and `API_KEY`.

429 and 503 answers are retried a bounded number of times, waiting as long as `Retry-After`
says (capped), else with exponential backoff; connection errors are retried the same way. Every
other 4xx/5xx raises `BackendError` carrying the backend's `detail`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragstack_common.http import parse_retry_after

# The backend's port, defined once for the CLI (`ragctl up`, the client's default URL).
BACKEND_PORT = 8000
DEFAULT_URL = f"http://127.0.0.1:{BACKEND_PORT}"
RETRY_STATUSES = (429, 503)


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    backend_url: str = Field(DEFAULT_URL, description="Base URL of the backend.")
    api_key: SecretStr | None = Field(None, description="The backend's API_KEY, when it has one.")


def default_settings() -> ClientSettings:
    return ClientSettings()


class BackendError(Exception):
    """An error answer of the backend (`status` > 0) or no answer at all (`status` == 0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.detail}" if self.status else self.detail


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent
    or unreadable."""
    return parse_retry_after(value, now=now)


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        return text[:300] or resp.reason_phrase or "no detail"
    if isinstance(body, dict) and body.get("detail") is not None:
        detail = body["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)
    return json.dumps(body)[:300]


Sleeper = Callable[[float], Awaitable[None]]


class BackendClient:
    """`async with BackendClient(url, api_key) as api: await api.query({...})`."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 5,
        transport_retries: int = 3,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleeper = asyncio.sleep,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )
        self.retries = retries
        self.transport_retries = transport_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._on_retry = on_retry

    async def __aenter__(self) -> BackendClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, transport_retries: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send with bounded retries on 429/503 and connection errors (not timeouts); raise
        BackendError on any other error answer, or when the retries run out."""
        if transport_retries is None:
            transport_retries = self.transport_retries
        attempt = 0
        while True:
            try:
                resp = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                reason = f"cannot reach the backend at {self.url} ({type(exc).__name__}: {exc})"
                if attempt >= transport_retries or isinstance(exc, httpx.TimeoutException):
                    raise BackendError(0, reason) from None
                wait = self._backoff(attempt)
                self._notify(f"{reason}; retrying in {wait:.1f}s")
            else:
                if resp.status_code < 400:
                    return resp
                detail = _detail(resp)
                if resp.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise BackendError(resp.status_code, detail)
                wait = retry_after_seconds(resp.headers.get("retry-after"))
                wait = self._backoff(attempt) if wait is None else min(wait, self.max_wait_s)
                self._notify(f"HTTP {resp.status_code} ({detail}); retrying in {wait:.1f}s")
            attempt += 1
            await self._sleep(wait)

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_s * 2**attempt, self.max_wait_s)

    def _notify(self, message: str) -> None:
        if self._on_retry is not None:
            self._on_retry(message)

    # -- documents -----------------------------------------------------------------------------

    async def list_documents(
        self, page_size: int = 500, *, transport_retries: int | None = None
    ) -> list[dict[str, Any]]:
        """Every document (all pages of `GET /documents`)."""
        docs: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            params = {"limit": page_size, "offset": offset}
            resp = await self.request(
                "GET", "/documents", params=params, transport_retries=transport_retries
            )
            body = resp.json()
            docs.extend(body["documents"])
            following = body.get("next_offset")
            # Guard against a server that never advances.
            offset = following if following is not None and following > offset else None
        return docs

    async def get_document(self, doc_id: str) -> dict[str, Any]:
        return (await self.request("GET", f"/documents/{doc_id}")).json()

    async def upload(
        self,
        filename: str,
        data: bytes,
        metadata: dict[str, Any] | None = None,
        replace: str | None = None,
    ) -> dict[str, Any]:
        """Upload one file (replacing document `replace` once indexed, when given); returns its
        entry of the 202 answer (id, status, duplicate, replaces, ...)."""
        form = {"metadata": json.dumps(metadata)} if metadata else {}
        if replace:
            form["replace"] = replace
        resp = await self.request(
            "POST", "/documents", files=[("files", (filename, data))], data=form or None
        )
        return resp.json()["documents"][0]

    # -- query ---------------------------------------------------------------------------------

    async def query(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.request("POST", "/query", json=body)).json()

    # -- re-index ------------------------------------------------------------------------------

    async def reindex(self, method: str = "GET") -> dict[str, Any]:
        """POST starts a re-index, GET reads its progress, DELETE cancels it."""
        return (await self.request(method, "/reindex")).json()

    async def health(self) -> dict[str, Any]:
        return (await self.request("GET", "/health")).json()
