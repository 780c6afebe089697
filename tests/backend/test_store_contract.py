"""The store contract, run against every engine: the embedded engine (qdrant-edge), the server
API through qdrant-client's local mode (the stand-in for a server), and a real server when
QDRANT_URL is set (`QDRANT_URL=http://127.0.0.1:6333 pytest tests/backend/test_store_contract.py`).
Where engines can be compared on the same data, their top-10s must agree."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from backend.ingest.chunk import Chunk
from backend.settings import Settings
from backend.store import StoreError, StoreLocked, VectorStore, point_id
from backend.store.edge import EdgeStore
from backend.store.server import ServerStore

pytestmark = pytest.mark.anyio
DIM = 4
ENGINES = ["edge", "local"] + (["server"] if os.environ.get("QDRANT_URL") else [])


def unit(*xs: float) -> list[float]:
    norm = math.sqrt(sum(x * x for x in xs))
    return [x / norm for x in xs]


def chunks(n: int, page: int | None = None, texts: list[str] | None = None) -> list[Chunk]:
    texts = texts or [f"text {i}" for i in range(n)]
    return [Chunk(i, page, i * 10, i * 10 + 5, texts[i]) for i in range(n)]


def engine_settings(tmp_path: Path, engine: str, **kw: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / f"data-{engine}",
        qdrant_url=os.environ["QDRANT_URL"] if engine == "server" else None,
        qdrant_collection=f"c_{tmp_path.name[-20:]}".replace("-", "_"),
        **kw,
    )


def open_engine(settings: Settings, engine: str) -> VectorStore:
    if engine == "edge":
        return EdgeStore(settings)
    if engine == "local":
        folder = settings.data_dir / "local"
        folder.mkdir(parents=True, exist_ok=True)
        return ServerStore(settings, client=QdrantClient(path=str(folder)))
    return ServerStore(settings)


async def cleanup(store: VectorStore) -> None:
    if store.engine == "server" and os.environ.get("QDRANT_URL"):
        for name in await store.list_collections():
            if name.startswith(store.collection) or name.startswith("c_"):
                await store._run(store.client.delete_collection, name)  # type: ignore[attr-defined]
    await store.close()


@pytest.fixture(params=ENGINES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s = open_engine(engine_settings(tmp_path, request.param), request.param)
    await s.ensure_collection(DIM)
    yield s
    await cleanup(s)


async def put(
    store: VectorStore,
    doc: str,
    vectors: list[list[float]],
    ready: bool = True,
    texts: list[str] | None = None,
    collection: str | None = None,
    **meta: object,
) -> None:
    await store.upsert(
        document_id=doc,
        content_hash=f"hash-{doc}",
        chunks=chunks(len(vectors), page=1, texts=texts),
        vectors=vectors,
        filename=f"{doc}.txt",
        metadata=dict(meta),
        collection=collection,
    )
    if ready:
        await store.set_ready(f"hash-{doc}", len(vectors), collection=collection)


async def test_chunks_are_invisible_until_ready(store: VectorStore) -> None:
    await put(store, "d1", [unit(1, 0, 0, 0), unit(1, 1, 0, 0)], ready=False)
    assert await store.count("d1") == 2
    assert await store.search(unit(1, 0, 0, 0), limit=10) == []
    await store.set_ready("hash-d1", 2)
    hits = await store.search(unit(1, 0, 0, 0), limit=10)
    assert [h.payload["chunk_index"] for h in hits] == [0, 1]
    top = hits[0]
    assert top.score == pytest.approx(1.0, abs=1e-5)  # cosine
    assert top.id == point_id("hash-d1", 0)  # a str on every engine (Edge returns uuid.UUID)
    assert top.payload["document_id"] == "d1"
    assert top.payload["filename"] == "d1.txt"
    assert (top.payload["page"], top.payload["start"], top.payload["end"]) == (1, 0, 5)
    assert top.payload["text"] == "text 0"


async def test_filters_by_document_and_metadata(store: VectorStore) -> None:
    await put(store, "a", [unit(1, 0, 0, 0)], team="search", year=2024, score=0.5, public=True)
    await put(store, "b", [unit(1, 0.1, 0, 0)], team="infra", year=2023, score=1.5, public=False)
    q = unit(1, 0, 0, 0)

    async def docs(**kw: Any) -> list[str]:
        return [h.payload["document_id"] for h in await store.search(q, limit=10, **kw)]

    assert await docs() == ["a", "b"]
    assert await docs(document_ids=["b"]) == ["b"]
    assert await docs(document_ids=[]) == []
    assert await docs(metadata={"team": "infra"}) == ["b"]
    assert await docs(metadata={"year": 2024}) == ["a"]
    assert await docs(metadata={"public": False}) == ["b"]
    assert await docs(metadata={"public": True}) == ["a"]
    assert await docs(metadata={"public": [True, False]}) == ["a", "b"]
    assert await docs(metadata={"score": 1.5}) == ["b"]
    assert await docs(metadata={"score": [0.5, 1.5]}) == ["a", "b"]
    assert await docs(metadata={"year": [2023, 2024]}) == ["a", "b"]
    assert await docs(metadata={"team": ["search", "nope"], "public": True}) == ["a"]
    assert await docs(metadata={"missing": "x"}) == []
    # Many values: one any-of / range list evaluated by the engine, not a Python loop.
    many = [0.5] + [10 + i / 3 for i in range(99)]
    assert await docs(metadata={"score": many}) == ["a"]
    assert await docs(metadata={"year": list(range(1900, 2024))}) == ["b"]
    # The metadata a caller gave comes back as given (booleans stay booleans).
    hit = (await store.search(q, limit=1))[0]
    assert hit.payload["metadata"] == {"team": "search", "year": 2024, "score": 0.5, "public": True}


async def test_metadata_filters_hold_after_indexes_and_mixed_types(store: VectorStore) -> None:
    # Ingestion indexes each metadata key it meets (a 100-float any-of took 1.2 s per query at
    # 10^4 points on Edge without one, 2.4 ms with). The index must not change what matches,
    # also when one key holds an int in one document and a float in the next.
    for doc, meta in (
        ("a", {"year": 2024, "team": "search", "public": True}),
        ("b", {"year": 2023.5, "team": "infra", "public": False}),
        ("c", {"year": 7, "team": 5, "public": True}),
    ):
        await store.ensure_collection(4)
        await store.ensure_metadata_indexes(meta)
        await put(store, doc, [unit(1, 0, 0, ord(doc) / 100)], **meta)
    await store.ensure_metadata_indexes({"year": 1})  # known keys: nothing more to do
    q = unit(1, 0, 0, 0)

    async def docs(**kw: Any) -> list[str]:
        return sorted(h.payload["document_id"] for h in await store.search(q, limit=10, **kw))

    assert await docs(metadata={"year": 2024}) == ["a"]
    assert await docs(metadata={"year": 2023.5}) == ["b"]
    assert await docs(metadata={"year": [2023.5, 7]}) == ["b", "c"]
    assert await docs(metadata={"year": [1000.5 + i for i in range(99)] + [2024]}) == ["a"]
    assert await docs(metadata={"team": "infra"}) == ["b"]
    assert await docs(metadata={"team": 5}) == ["c"]
    assert await docs(metadata={"public": True}) == ["a", "c"]
    assert await docs(metadata={"public": False, "year": 2023.5}) == ["b"]


async def test_delete_removes_every_chunk_of_one_document(store: VectorStore) -> None:
    await put(store, "keep", [unit(1, 0, 0, 0)] * 3)
    await put(store, "drop", [unit(0, 1, 0, 0)] * 5)
    assert await store.count() == 8
    await store.delete_document("drop")
    assert await store.count("drop") == 0
    assert await store.count("keep") == 3
    assert {h.payload["document_id"] for h in await store.search(unit(0, 1, 0, 0), limit=10)} == {
        "keep"
    }


async def test_point_ids_are_deterministic_so_reingest_overwrites(store: VectorStore) -> None:
    assert point_id("h", 0) == point_id("h", 0) != point_id("h", 1)
    await put(store, "d", [unit(1, 0, 0, 0)] * 2)
    await put(store, "d", [unit(1, 0, 0, 0)] * 2)
    assert await store.count("d") == 2


async def test_retrieve_by_ids_in_the_order_asked(store: VectorStore) -> None:
    await put(store, "d", [unit(1, 0, 0, 0)] * 3, ready=False)
    ids = [point_id("hash-d", 2), point_id("hash-nope", 0), point_id("hash-d", 0)]
    hits = await store.retrieve(ids)
    assert [h.id for h in hits] == [ids[0], ids[2]]
    assert [h.payload["chunk_index"] for h in hits] == [2, 0]


async def test_grouped_search_gives_one_hit_per_document(store: VectorStore) -> None:
    await put(store, "a", [unit(1, 0, 0, 0), unit(1, 0.2, 0, 0), unit(0, 1, 0, 0)])
    await put(store, "b", [unit(1, 0.1, 0, 0)])
    groups = await store.search_groups(unit(1, 0, 0, 0), limit=10, candidates=3)
    assert [(g.document_id, g.matches) for g in groups] == [("a", 2), ("b", 1)]
    assert groups[0].best.payload["chunk_index"] == 0
    assert groups[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(await store.search_groups(unit(1, 0, 0, 0), limit=1)) == 1


async def test_named_collections_and_the_active_switch(store: VectorStore) -> None:
    active = store.collection
    other = f"{active}_next"
    await store.ensure_collection(DIM, collection=other)
    await put(store, "old", [unit(1, 0, 0, 0)])
    await put(store, "new", [unit(1, 0, 0, 0)], collection=other)
    assert {active, other} <= set(await store.list_collections())
    assert [h.payload["document_id"] for h in await store.search(unit(1, 0, 0, 0), limit=5)] == [
        "old"
    ]
    hits = await store.search(unit(1, 0, 0, 0), limit=5, collection=other)
    assert [h.payload["document_id"] for h in hits] == ["new"]
    with pytest.raises(StoreError):
        await store.drop_collection(active)
    if store.engine == "server":
        # The logical name is a real collection here (as earlier versions created it): an
        # alias cannot take its place, and the store says so.
        with pytest.raises(StoreError, match="not an alias"):
            await store.set_active_collection(other)
        await store.drop_collection(other)
        return
    await store.set_active_collection(other)
    assert store.collection == other
    assert [h.payload["document_id"] for h in await store.search(unit(1, 0, 0, 0), limit=5)] == [
        "new"
    ]
    await store.drop_collection(active)
    assert active not in await store.list_collections()


async def test_server_alias_switch(tmp_path: Path) -> None:
    """On the server API the logical name becomes an alias, switched in one atomic update."""
    settings = engine_settings(tmp_path, "local")
    s = open_engine(settings, "local")
    try:
        for name in ("gen1", "gen2"):
            await s.ensure_collection(DIM, collection=name)
        await put(s, "one", [unit(1, 0, 0, 0)], collection="gen1")
        await put(s, "two", [unit(1, 0, 0, 0)], collection="gen2")
        await s.set_active_collection("gen1")
        assert await s.collection_exists()
        assert [h.payload["document_id"] for h in await s.search(unit(1, 0, 0, 0), limit=5)] == [
            "one"
        ]
        await s.set_active_collection("gen2")
        assert [h.payload["document_id"] for h in await s.search(unit(1, 0, 0, 0), limit=5)] == [
            "two"
        ]
        with pytest.raises(StoreError, match="active"):
            await s.drop_collection("gen2")
        await s.drop_collection("gen1")
    finally:
        await s.close()


async def test_dimension_mismatch_is_refused(store: VectorStore) -> None:
    with pytest.raises(StoreError, match="holds 4-dimensional vectors"):
        await store.ensure_collection(8)
    await store.ensure_collection(DIM)  # the same dimension is fine


@pytest.mark.parametrize("engine", ENGINES)
async def test_missing_collection_reads_as_empty(tmp_path: Path, engine: str) -> None:
    s = open_engine(engine_settings(tmp_path, engine), engine)
    try:
        assert await s.count() == 0
        assert await s.search(unit(1, 0, 0, 0), limit=5) == []
        assert await s.retrieve([point_id("h", 0)]) == []
        await s.delete_document("nothing")
        health = await s.health()
        assert health.ok and not health.exists
    finally:
        await s.close()


async def test_health_answers_without_counting(store: VectorStore) -> None:
    await put(store, "d", [unit(1, 0, 0, 0)] * 3)
    health = await store.health()
    assert health.ok and health.exists and health.collection == store.collection
    assert health.points in (3, None)  # local mode keeps no count: unknown rather than a scan


def test_embedded_folder_allows_one_process(tmp_path: Path) -> None:
    settings = engine_settings(tmp_path, "edge")
    first = EdgeStore(settings)
    try:
        with pytest.raises(StoreLocked, match="in use by another process"):
            EdgeStore(settings)
    finally:
        import asyncio

        asyncio.run(first.close())
    asyncio.run(EdgeStore(settings).close())  # free again once the first is closed


async def test_encoder_version_is_checked_at_open(tmp_path: Path) -> None:
    import json

    settings = engine_settings(tmp_path, "edge")
    s = EdgeStore(settings)
    await s.ensure_collection(DIM)
    await s.close()
    meta = s.root / settings.qdrant_collection / "store.json"
    body = json.loads(meta.read_text())
    meta.write_text(json.dumps({**body, "encoder_version": 0}))
    with pytest.raises(StoreError, match="BM25 encoder version 0") as exc:
        EdgeStore(settings)
    assert "upload the documents again" in str(exc.value)


# A vocabulary big enough that BM25 scores rarely tie (ties may rank differently per engine).
WORDS = [f"w{a}{b}" for a in "bcdfghjklm" for b in "aeiouyxz"]


def corpus(seed: int = 7, docs: int = 40) -> list[tuple[str, list[str], list[list[float]]]]:
    rng = random.Random(seed)
    # Every chunk a different length, so BM25 scores do not tie: RRF turns ranks into scores,
    # and engines may order tied candidates differently.
    lengths = list(range(3, 3 + docs * 4))
    rng.shuffle(lengths)
    out = []
    for d in range(docs):
        n = rng.randint(1, 4)
        texts = [" ".join(rng.choice(WORDS) for _ in range(lengths.pop())) for _ in range(n)]
        vecs = [unit(*(rng.gauss(0, 1) for _ in range(DIM))) for _ in range(n)]
        out.append((f"doc{d:02d}", texts, vecs))
    return out


@pytest.mark.parametrize("fusion", ["dbsf", "rrf"])
async def test_engines_agree_on_top_10(tmp_path: Path, fusion: str) -> None:
    """Same data in every engine: dense, sparse and hybrid top-10s (with and without filters)
    must name the same chunks, in the same order up to score ties."""
    stores = [
        open_engine(engine_settings(tmp_path, e, fusion=fusion, hybrid_prefetch=20), e)
        for e in ENGINES
    ]
    rng = random.Random(1)
    try:
        for s in stores:
            await s.ensure_collection(DIM)
            for i, (doc, texts, vecs) in enumerate(corpus()):
                await put(s, doc, vecs, texts=texts, group=i % 3, flag=i % 2 == 0)
        for _ in range(12):
            q = unit(*(rng.gauss(0, 1) for _ in range(DIM)))
            text = " ".join(rng.choice(WORDS) for _ in range(3))
            for mode in ("dense", "sparse", "hybrid"):
                for flt in ({}, {"metadata": {"group": [0, 2], "flag": True}}):
                    results = [
                        await s.search(q, text=text, mode=mode, limit=10, **flt)  # type: ignore[arg-type]
                        for s in stores
                    ]
                    ref = results[0]
                    for other in results[1:]:
                        assert len(other) == len(ref), (mode, flt)
                        for a, b in zip(ref, other, strict=True):
                            assert a.score == pytest.approx(b.score, rel=1e-3, abs=1e-4)
                        # Equal scores may come in another order, and a tie at the cut may
                        # keep another chunk: compare the chunks scored above the last one.
                        if ref:
                            cut = ref[-1].score + 1e-3
                            assert {h.id for h in ref if h.score > cut} == {
                                h.id for h in other if h.score > cut
                            }, (mode, flt)
    finally:
        for s in stores:
            await cleanup(s)


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_reopen_after_sigkill_keeps_acknowledged_writes(tmp_path: Path, engine: str) -> None:
    settings = engine_settings(tmp_path, engine)
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store_contract import open_engine, engine_settings, put, unit
        from pathlib import Path

        async def main():
            s = open_engine(engine_settings(Path({str(tmp_path)!r}), {engine!r}), {engine!r})
            await s.ensure_collection(4)
            await put(s, "a", [unit(1, 0, 0, 0)] * 3)
            await put(s, "b", [unit(0, 1, 0, 0)] * 2, ready=False)
            await s.delete_document("a")
            await put(s, "c", [unit(0, 0, 1, 0)] * 2, flag=True)
            print("written", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -9 and "written" in done.stdout, done.stderr

    import asyncio

    async def check() -> None:
        s = open_engine(settings, engine)
        try:
            assert await s.count("a") == 0
            assert await s.count("b") == 2
            hits = await s.search(unit(0, 0, 1, 0), limit=10, metadata={"flag": True})
            assert [h.payload["document_id"] for h in hits] == ["c", "c"]
            assert await s.search(unit(0, 1, 0, 0), limit=10, document_ids=["b"]) == []
        finally:
            await s.close()

    asyncio.run(check())


async def test_server_collection_records_and_checks_the_encoder_version(tmp_path: Path) -> None:
    from qdrant_client import models as qm

    from backend.store.server import ENCODER_KEY

    s = open_engine(engine_settings(tmp_path, "local"), "local")
    try:
        await s.ensure_collection(DIM)
        info = await s._run(s.client.get_collection, s.collection)  # type: ignore[attr-defined]
        assert (info.config.metadata or {}).get(ENCODER_KEY) is not None
        await s._run(
            s.client.create_collection,  # type: ignore[attr-defined]
            "old_encoder",
            vectors_config={"dense": qm.VectorParams(size=DIM, distance=qm.Distance.COSINE)},
            sparse_vectors_config={"bm25": qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            metadata={ENCODER_KEY: 0},
        )
        with pytest.raises(StoreError, match="BM25 encoder version 0") as exc:
            await s.ensure_collection(DIM, collection="old_encoder")
        assert "upload the documents again" in str(exc.value)
    finally:
        await s.close()


async def test_embedded_active_switch_survives_a_restart(tmp_path: Path) -> None:
    settings = engine_settings(tmp_path, "edge")
    s = EdgeStore(settings)
    await s.ensure_collection(DIM, collection="gen2")
    await put(s, "new", [unit(1, 0, 0, 0)], collection="gen2")
    await s.set_active_collection("gen2")
    await s.close()
    again = EdgeStore(settings)
    try:
        assert again.collection == "gen2"
        hits = await again.search(unit(1, 0, 0, 0), limit=5)
        assert [h.payload["document_id"] for h in hits] == ["new"]
    finally:
        await again.close()
    # Another QDRANT_COLLECTION is its own name, not redirected by the first one's switch.
    other = EdgeStore(settings.model_copy(update={"qdrant_collection": "fresh"}))
    try:
        assert other.collection == "fresh" and not await other.collection_exists()
    finally:
        await other.close()
