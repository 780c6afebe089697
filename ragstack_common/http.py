"""HTTP conventions the services and their clients share: writing and reading `Retry-After`
(delta-seconds or an HTTP-date, RFC 9110 10.2.3) and checking a bearer token in constant time.

One home so that a server's 429 and a client's retry agree on the format, and so that the three
places that check a bearer token (backend, ml-api, CLI tests) cannot drift apart."""

from __future__ import annotations

import email.utils
import hmac
import math
import time
from datetime import UTC


def retry_after_header(seconds: float) -> dict[str, str]:
    """The header telling a client how long to wait: whole seconds, at least 1 (0 would invite an
    immediate retry storm)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def parse_retry_after(
    value: str | None, *, now: float | None = None, cap: float | None = None
) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), at most `cap`;
    None if absent or unreadable, so the caller falls back to its own backoff."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    seconds = max(0.0, seconds)
    return seconds if cap is None else min(seconds, cap)


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """Whether an Authorization header value is `Bearer <expected>` (scheme case-insensitive,
    token compared in constant time so its prefix cannot be guessed by timing)."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), expected.encode()
    )
