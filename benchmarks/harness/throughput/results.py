"""One measured run (contender, set, setting, rates) and a contender that failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness.report import pct

# -- results -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One measurement of one contender."""

    contender: str
    dataset: str
    setting: str
    texts: int
    tokens: int
    seconds: float
    cpu_s: float | None = None  # CPU seconds of the process (tree) doing the work
    concurrency: int | None = None
    client_batch: int | None = None
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    min_cos: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    loadavg: str = ""
    probe: float | None = None  # reference probe (texts/s) around this run: see Bench.probe

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0

    @property
    def texts_per_cpu_s(self) -> float | None:
        return self.texts / self.cpu_s if self.cpu_s else None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "contender": self.contender,
            "dataset": self.dataset,
            "setting": self.setting,
            "texts": self.texts,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 3),
            "texts_per_s": round(self.texts_per_s, 2),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "concurrency": self.concurrency,
            "client_batch": self.client_batch,
            "p50_ms": pct(lat, 50),
            "p95_ms": pct(lat, 95),
            "p99_ms": pct(lat, 99),
            "requests": len(lat),
            "errors": self.errors,
            "error_samples": self.error_samples[:5],
            "min_cos": self.min_cos,
            "extra": self.extra,
            "loadavg": self.loadavg,
            "probe_texts_per_s": None if self.probe is None else round(self.probe, 2),
        }


@dataclass
class Failure:
    contender: str
    reason: str
