"""What the soak records while it runs: answers per request kind, every document it uploaded,
the RSS samples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.harness.report import pct
from benchmarks.harness.soak.data import Source

# -- bookkeeping -------------------------------------------------------------------------------


@dataclass
class KindStats:
    """Answers to one kind of request. Latency and status are those of the final answer (a
    429/503 with Retry-After is waited out and retried, and counted apart)."""

    latencies: list[float] = field(default_factory=list)  # ms
    statuses: Counter[int] = field(default_factory=Counter)
    r429: int = 0
    r503: int = 0
    server_errors: int = 0  # 5xx, 503 with Retry-After aside
    unexpected: int = 0  # any other status than the expected ones (e.g. 404 on an own document)
    transport: int = 0  # connection errors and timeouts
    abandoned: int = 0  # a Retry-After wait would have ended after the deadline

    @property
    def errors(self) -> int:
        return self.server_errors + self.unexpected + self.transport


@dataclass
class Doc:
    id: str
    client: int
    fmt: str
    filename: str
    source: Source
    accepted_at: float  # seconds since the start of the load (or of the prefill)
    prefill: bool = False
    state: str = "live"  # live | deleted | unknown (delete without answer) | vanished
    note: str = ""


@dataclass
class Sample:
    t: float  # seconds since the start of the load
    rss: dict[str, float | None]
    pending: int | None = None
    points: int | None = None


def median(values: Sequence[float]) -> float | None:
    return pct(values, 50)
