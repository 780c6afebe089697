"""Contract tests of the vector store. They run against embedded Qdrant in a temporary folder;
with QDRANT_URL set (e.g. `QDRANT_URL=http://127.0.0.1:6333 pytest tests/backend`) the same
tests run against that server, each in its own collection."""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import AsyncIterator

import pytest

from backend.ingest.chunk import Chunk
from backend.settings import Settings
from backend.store import StoreError, StoreLocked, VectorStore, open_client, point_id

pytestmark = pytest.mark.anyio
DIM = 4


def unit(*xs: float) -> list[float]:
    norm = math.sqrt(sum(x * x for x in xs))
    return [x / norm for x in xs]


def chunks(n: int, page: int | None = None) -> list[Chunk]:
    return [Chunk(i, page, i * 10, i * 10 + 5, f"text {i}") for i in range(n)]


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[VectorStore]:
    s = VectorStore(settings)
    await s.ensure_collection(DIM)
    yield s
    if not s.local:
        await s._run(s.client.delete_collection, s.collection)
    await s.close()


async def put(
    store: VectorStore, doc: str, vectors: list[list[float]], ready: bool = True, **meta: object
) -> None:
    await store.upsert(
        document_id=doc,
        content_hash=f"hash-{doc}",
        chunks=chunks(len(vectors), page=1),
        vectors=vectors,
        filename=f"{doc}.txt",
        metadata=dict(meta),
    )
    if ready:
        await store.set_ready(f"hash-{doc}", len(vectors))


async def test_chunks_are_invisible_until_ready(store: VectorStore) -> None:
    await put(store, "d1", [unit(1, 0, 0, 0), unit(1, 1, 0, 0)], ready=False)
    assert await store.count("d1") == 2
    assert await store.search(unit(1, 0, 0, 0), limit=10) == []
    await store.set_ready("hash-d1", 2)
    hits = await store.search(unit(1, 0, 0, 0), limit=10)
    assert [h.payload["chunk_index"] for h in hits] == [0, 1]
    top = hits[0]
    assert top.score == pytest.approx(1.0, abs=1e-5)  # cosine
    assert top.payload["document_id"] == "d1"
    assert top.payload["filename"] == "d1.txt"
    assert (top.payload["page"], top.payload["start"], top.payload["end"]) == (1, 0, 5)
    assert top.payload["text"] == "text 0"


async def test_filters_by_document_and_metadata(store: VectorStore) -> None:
    await put(store, "a", [unit(1, 0, 0, 0)], team="search", year=2024, score=0.5, public=True)
    await put(store, "b", [unit(1, 0.1, 0, 0)], team="infra", year=2023, score=1.5, public=False)
    q = unit(1, 0, 0, 0)

    async def docs(**kw: object) -> list[str]:
        return [h.payload["document_id"] for h in await store.search(q, limit=10, **kw)]  # type: ignore[arg-type]

    assert await docs() == ["a", "b"]
    assert await docs(document_ids=["b"]) == ["b"]
    assert await docs(metadata={"team": "infra"}) == ["b"]
    assert await docs(metadata={"year": 2024}) == ["a"]
    assert await docs(metadata={"public": False}) == ["b"]
    assert await docs(metadata={"score": 1.5}) == ["b"]
    assert await docs(metadata={"year": [2023, 2024]}) == ["a", "b"]
    assert await docs(metadata={"team": ["search", "nope"], "public": True}) == ["a"]
    assert await docs(metadata={"missing": "x"}) == []


async def test_delete_removes_every_chunk_of_one_document(store: VectorStore) -> None:
    await put(store, "keep", [unit(1, 0, 0, 0)] * 3)
    await put(store, "drop", [unit(0, 1, 0, 0)] * 5)
    assert await store.count() == 8
    await store.delete_document("drop")
    assert await store.count("drop") == 0
    assert await store.count("keep") == 3


async def test_point_ids_are_deterministic_so_reingest_overwrites(store: VectorStore) -> None:
    assert point_id("h", 0) == point_id("h", 0) != point_id("h", 1)
    await put(store, "d", [unit(1, 0, 0, 0)] * 2)
    await put(store, "d", [unit(1, 0, 0, 0)] * 2)
    assert await store.count("d") == 2


async def test_dimension_mismatch_is_refused(settings: Settings, store: VectorStore) -> None:
    await store.close()
    other = VectorStore(settings)
    try:
        with pytest.raises(StoreError, match="holds 4-dimensional vectors"):
            await other.ensure_collection(8)
        await other.ensure_collection(DIM)  # the same dimension is fine
    finally:
        await other.close()
    store.client = open_client(settings)  # let the fixture clean up


async def test_missing_collection_reads_as_empty(settings: Settings) -> None:
    s = VectorStore(settings)
    try:
        assert await s.count() == 0
        assert await s.search(unit(1, 0, 0, 0), limit=5) == []
        await s.delete_document("nothing")
    finally:
        await s.close()


def test_embedded_folder_allows_one_client(settings: Settings) -> None:
    if settings.qdrant_url:
        pytest.skip("server mode has no folder lock")
    first = open_client(settings)
    try:
        with pytest.raises(StoreLocked, match="in use by another process"):
            open_client(settings)
    finally:
        first.close()
    open_client(settings).close()  # free again once the first is closed


async def test_embedded_storage_uses_wal(settings: Settings, store: VectorStore) -> None:
    # One fsync per point made a 1,000-chunk document take nearly a minute to store.
    if not store.local:
        pytest.skip("server mode has its own storage")
    await put(store, "d", [unit(1, 0, 0, 0)] * 3)
    path = settings.qdrant_folder / "collection" / store.collection / "storage.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await store.close()
    reopened = VectorStore(settings)
    try:
        assert await reopened.count("d") == 3  # committed points survive a close and reopen
    finally:
        await reopened.close()
    store.client = open_client(settings)  # let the fixture clean up
