"""After the drain: every accepted upload accounted for (indexed, chunk counts, deletes gone,
the listing, a title sanity check)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections import Counter
from typing import Any

import httpx

from benchmarks.harness.soak.bookkeeping import Doc
from benchmarks.harness.soak.load import SoakLoad


class SoakVerify(SoakLoad):
    """The load plus the checks after it."""

    async def vcall(self, method: str, path: str, **kw: Any) -> httpx.Response | None:
        """A verification request; after a backend that did not answer in --verify-timeout, no
        more are sent (None): the checks left are reported as not done, not as passed."""
        assert self.http is not None
        if self.unresponsive:
            return None
        try:
            return await self.http.request(method, path, timeout=self.args.verify_timeout, **kw)
        except httpx.RequestError as exc:
            self.unresponsive = f"{method} {path}: {type(exc).__name__} {exc}".strip()
            return None

    async def verify(self) -> None:
        """Account for every upload; see the docstring of benchmarks/soak.py (step 5)."""
        try:
            listed = await self.listing(timeout=self.args.verify_timeout)
        except httpx.HTTPError as exc:
            self.unresponsive = f"GET /documents: {type(exc).__name__} {exc}"
            listed = {}
        # A delete without an answer: the listing tells which way it went.
        for doc in self.docs.values():
            if doc.state == "unknown":
                doc.state = "live" if doc.id in listed else "deleted"
        for doc in self.docs.values():
            if doc.state == "vanished":
                self.lost.append((doc.id, doc.note))
        expected = {i: d for i, d in self.docs.items() if d.state == "live"}
        deleted = [i for i, d in self.docs.items() if d.state == "deleted"]
        sem = asyncio.Semaphore(8)
        statuses: Counter[str] = Counter()

        async def check_live(doc: Doc) -> None:
            row = listed.get(doc.id)
            if row is None:
                if self.unresponsive:
                    self.unverified.append((doc.id, "listing not answered"))
                else:
                    self.lost.append((doc.id, "not in GET /documents"))
                return
            statuses[row["status"]] += 1
            if row["status"] != "indexed":
                self.lost.append((doc.id, f"{row['status']}: {row.get('error')}"))
                return
            async with sem:
                resp = await self.vcall("GET", f"/documents/{doc.id}")
            if resp is None:
                self.unverified.append((doc.id, "chunk count: backend not answering"))
                return
            if resp.status_code != 200:
                self.lost.append((doc.id, f"GET /documents/{{id}}: {resp.status_code}"))
                return
            d = resp.json()
            n, stored = d.get("chunk_count"), d.get("chunks_stored")
            if not n or stored != n or d["progress"]["chunks_done"] != n:
                self.lost.append((doc.id, f"chunk_count {n}, chunks_stored {stored}"))
            with contextlib.suppress(KeyError, ValueError, TypeError):
                created = dt.datetime.fromisoformat(d["created_at"].replace("Z", "+00:00"))
                indexed = dt.datetime.fromisoformat(d["indexed_at"].replace("Z", "+00:00"))
                if not doc.prefill:  # the prefill's queue wait is not the load's
                    self.ingest_seconds.append((indexed - created).total_seconds())

        async def check_deleted(doc_id: str) -> None:
            if doc_id in listed:
                self.resurrected.append((doc_id, "listed after its delete answered 204"))
                return
            async with sem:
                resp = await self.vcall("GET", f"/documents/{doc_id}")
            if resp is not None and resp.status_code != 404:
                self.resurrected.append((doc_id, f"GET after delete: {resp.status_code}"))

        await asyncio.gather(*(check_live(d) for d in expected.values()))
        await asyncio.gather(*(check_deleted(i) for i in deleted))
        self.final_statuses = statuses
        self.n_expected, self.n_deleted = len(expected), len(deleted)

        # Chunks of deleted documents must be gone from the index, not only from the registry.
        self.orphan_hits = 0
        for k in range(0, len(deleted), 1000):
            body = {
                "query": "soak",
                "top_k": 100,
                "mode": "dense",
                "rerank": False,
                "filters": {"document_ids": deleted[k : k + 1000]},
            }
            resp = await self.vcall("POST", "/query", json=body)
            if resp is None or resp.status_code != 200:
                self.orphan_hits = None
                break
            self.orphan_hits += len(resp.json()["results"])

        # The listing holds exactly what the clients expect (ours by metadata.soak_run).
        ours = {
            i for i, d in listed.items() if (d.get("metadata") or {}).get("soak_run") == self.run_id
        }
        self.unexpected_listed = sorted(ours - set(expected))
        self.listed_ours = len(ours)
        self.listed_total = len(listed)
        resp = await self.vcall("GET", "/health")
        self.final_health = resp.json() if resp is not None else {}
        self.points = (self.final_health.get("qdrant") or {}).get("points")
        self.indexed_chunks = sum(
            d.get("chunk_count") or 0 for d in listed.values() if d["status"] == "indexed"
        )

        # Retrieval sanity: a document's own title finds it (or a copy of the same abstract).
        rng = random.Random(self.args.seed)
        bad = {i for i, _ in self.lost + self.unverified}
        pool = [d for d in expected.values() if d.id not in bad and d.source.title]
        picked = rng.sample(pool, min(self.args.sanity, len(pool)))
        for doc in picked:
            body = {"query": doc.source.title[:2000], "top_k": 10, "rerank": False}
            resp = await self.vcall("POST", "/query", json=body)
            if resp is None or resp.status_code != 200:
                self.sanity_misses.append(f"not answered: {doc.source.title[:60]}")
                self.sanity_n += 1
                continue
            self.sanity_n += 1
            hits = [self.docs.get(r["document_id"]) for r in resp.json()["results"]]
            if any(h is not None and h.source.id == doc.source.id for h in hits):
                self.sanity_found += 1
            else:
                self.sanity_misses.append(doc.source.title[:80])
