"""The backend's own store (backend/store, embedded engine) as a column of store_scale.py.

Why: the raw qdrant-edge column measures the engine; this one measures what the backend runs:
its payloads, filter translation, BM25 encoding of chunk and query text, write lock, and index
maintenance (`maintain(force=True)`: copy, optimize() in a child process, journal replay,
swap). Its API is async, so it runs on an event loop in a thread; the benchmark's query threads
call it as the backend's request handlers would (each search awaits the store).

Differences from the raw columns, by construction: the backend marks whole documents ready
(every point is ready here; the 5% not-ready points of the raw columns do not exist), metadata
belongs to the document (the first chunk's `score` is the document's), and point ids are the
backend's (so its top-10s are not compared with the others').
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np


class BackendEngine:
    name = "backend"

    def __init__(self, folder: Path) -> None:
        from backend.settings import Settings

        self.folder = folder
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            qdrant_url=None,
            qdrant_path=folder,
            data_dir=folder.with_name(folder.name + "-data"),
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store: Any = None

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self) -> Any:
        from backend.store.edge import EdgeStore

        return EdgeStore(self.settings)

    def create(self) -> None:
        # Loading: no periodic maintenance. Its builds of a partly loaded store would compete
        # with the upserts and lengthen the run; with --prebuild the one build comes after.
        from backend.store import maintenance

        maintenance.CHECK_INTERVAL_S = 10**9
        self.store = self._call(self._open())
        self._call(self.store.ensure_collection(384))
        self._call(self.store.ensure_metadata_indexes({"score": 0.5}))

    def open(self) -> None:
        self.store = self._call(self._open())

    def close(self) -> None:
        self._call(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()

    def upsert(self, pts: Sequence[tuple[str, np.ndarray, Any, dict]]) -> None:
        docs: dict[str, list[tuple[np.ndarray, dict]]] = {}
        for _pid, vec, _sp, payload in pts:
            docs.setdefault(payload["document_id"], []).append((vec, payload))
        self._call(self._upsert_docs(docs))

    async def _upsert_docs(self, docs: dict[str, list[tuple[np.ndarray, dict]]]) -> None:
        for doc, items in docs.items():
            chunks = [
                SimpleNamespace(
                    index=p["chunk_index"],
                    page=p["page"],
                    start=p["start"],
                    end=p["end"],
                    text=p["text"],
                )
                for _v, p in items
            ]
            await self.store.upsert(
                document_id=doc,
                content_hash=doc,
                chunks=chunks,
                vectors=[v.tolist() for v, _p in items],
                filename=items[0][1]["filename"],
                metadata={"score": items[0][1]["metadata"]["score"]},
            )
            await self.store.set_ready(doc, 1 + max(c.index for c in chunks))

    def query(
        self, kind: str, vec: np.ndarray, sp: Any, spec: dict[str, Any], text: str = ""
    ) -> list[str]:
        meta = {"score": spec["scores"]} if "scores" in spec else None
        hits = self._call(
            self.store.search(
                vec.tolist(),
                limit=10,
                text=text,
                mode=kind,
                document_ids=spec.get("docs"),
                metadata=meta,
            )
        )
        return [h.id for h in hits]

    def rebuild(self, seconds: float) -> dict[str, Any]:
        """The backend's maintenance step, forced, given `seconds` to finish."""
        from backend.store import maintenance

        async def forced() -> list[Any]:
            # A rebuild the store's own maintenance started (it does during a bulk load) is
            # waited for first: maintain() skips a collection that is rebuilding.
            while any(c.rebuilding for c in self.store.open_collections()):
                await asyncio.sleep(0.5)
            return await maintenance.maintain(self.store, force=True)

        fut = asyncio.run_coroutine_threadsafe(forced(), self.loop)
        try:
            done = fut.result(seconds)
        except TimeoutError:
            fut.cancel()
            with contextlib.suppress(BaseException):
                fut.result(60)
            return {"build": f"not finished in {seconds:.0f} s (cancelled)"}
        if not done:
            return {"build": "not swapped (see log)"}
        return {"build": "swapped in", **dataclasses.asdict(done[0])}
