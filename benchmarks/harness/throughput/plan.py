"""How much each run measures: the full run and `--quick`."""

from __future__ import annotations

from dataclasses import dataclass

# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How much work each measurement gets (full run vs --quick)."""

    n_long: int  # corpus texts in the long set
    n_short: int  # queries in the short set
    mixed_long: int  # long texts in the mixed set ...
    mixed_short: int  # ... and short ones
    sweep: tuple[int, ...]  # in-process ORT batch sizes
    concurrencies: tuple[int, ...]
    max_passes: int  # cap on passes over a set for one HTTP run
    latency_requests: int  # one-short-text requests per concurrency
    inproc_latency_calls: int
    rerank_requests: dict[str, int]  # per reranker: requests per measurement
    rerank_concurrency: dict[str, tuple[int, ...]]  # per reranker
    side_concurrency: int  # long/short sets over HTTP run at this concurrency
    probe_texts: int  # texts in the load probe run around each measurement
    ingest_docs: int  # SciFact documents for the ingest stage (0 = the whole corpus)


FULL = Plan(
    n_long=256,
    n_short=768,
    mixed_long=384,
    mixed_short=384,
    sweep=(8, 16, 32, 64, 128),
    concurrencies=(1, 16, 64),
    max_passes=4,
    latency_requests=300,
    inproc_latency_calls=300,
    rerank_requests={"tiny": 12, "mid": 2},
    rerank_concurrency={"tiny": (1, 4), "mid": (1, 2)},
    side_concurrency=16,
    probe_texts=96,
    ingest_docs=0,
)
QUICK = Plan(
    n_long=32,
    n_short=128,
    mixed_long=64,
    mixed_short=64,
    sweep=(16, 32),
    concurrencies=(1, 16, 64),
    max_passes=2,
    latency_requests=40,
    inproc_latency_calls=40,
    rerank_requests={"tiny": 3},  # the mid-size cross-encoder only in the full run
    rerank_concurrency={"tiny": (1, 2)},
    side_concurrency=16,
    probe_texts=48,
    ingest_docs=200,
)
