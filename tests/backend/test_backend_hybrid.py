"""Dense, BM25 and hybrid retrieval in the vector store (embedded Qdrant in a temp folder, or a
server with QDRANT_URL), with real text through the real BM25 encoder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backend.ingest.chunk import Chunk
from backend.settings import Settings
from backend.store import VectorStore

pytestmark = pytest.mark.anyio

DOCS = {
    "lighthouse": "The lighthouse keeper trimmed the lamp wicks every evening before the storm.",
    "bakery": "Sourdough bread needs a starter, flour, water and salt, and a long proofing time.",
    "orbit": "Satellites in geostationary orbit circle the earth once per sidereal day.",
}
# Dense vectors chosen so that dense retrieval alone ranks "orbit" first for the query vector,
# while the query text only matches "bakery" lexically: the modes must disagree.
VECTORS = {"lighthouse": [0.0, 1.0, 0.0], "bakery": [0.0, 0.0, 1.0], "orbit": [1.0, 0.0, 0.0]}
QUERY_VECTOR = [0.9, 0.1, 0.42]


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[VectorStore]:
    s = VectorStore(settings)
    await s.ensure_collection(3)
    for name, text in DOCS.items():
        await s.upsert(
            document_id=name,
            content_hash=f"h-{name}",
            chunks=[Chunk(0, None, 0, len(text), text)],
            vectors=[VECTORS[name]],
            filename=f"{name}.txt",
            metadata={"topic": name},
        )
        await s.set_ready(f"h-{name}", 1)
    yield s
    if not s.local:
        await s._run(s.client.delete_collection, s.collection)
    await s.close()


async def ids(store: VectorStore, mode: str, text: str, **kw: object) -> list[str]:
    hits = await store.search(QUERY_VECTOR, text=text, mode=mode, limit=3, **kw)  # type: ignore[arg-type]
    return [h.payload["document_id"] for h in hits]


async def test_sparse_matches_stemmed_terms(store: VectorStore) -> None:
    # "proofed loaves of breads": stems of "bread" and "proof" match the bakery text only.
    assert await ids(store, "sparse", "proofed breads") == ["bakery"]
    assert await ids(store, "sparse", "the of and") == []  # stop-words only


async def test_dense_and_hybrid_rank_differently(store: VectorStore) -> None:
    dense = await ids(store, "dense", "proofed breads")
    assert dense[0] == "orbit"
    hybrid = await ids(store, "hybrid", "proofed breads")
    assert set(hybrid) == set(DOCS)
    # Fusion lifts the only lexical match above the dense-only runner-up.
    assert hybrid.index("bakery") < dense.index("bakery")


async def test_hybrid_honours_filters(store: VectorStore) -> None:
    got = await ids(store, "hybrid", "proofed breads", document_ids=["orbit", "lighthouse"])
    assert set(got) == {"orbit", "lighthouse"}
    got = await ids(store, "sparse", "lamp storm", metadata={"topic": "bakery"})
    assert got == []


async def test_hybrid_with_only_stop_words_falls_back_to_dense(store: VectorStore) -> None:
    assert await ids(store, "hybrid", "the of") == await ids(store, "dense", "the of")


async def test_collection_without_named_vectors_is_refused(settings: Settings) -> None:
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    from backend.store import StoreError

    # A foreign collection on the server API (qdrant-client local mode stands in for a server).
    s = VectorStore(settings, client=None if settings.qdrant_url else QdrantClient(":memory:"))
    await s._run(
        s.client.create_collection,
        s.collection,
        vectors_config=qm.VectorParams(size=3, distance=qm.Distance.COSINE),
    )
    with pytest.raises(StoreError, match="not created by this version"):
        await s.ensure_collection(3)
    if not s.local:
        await s._run(s.client.delete_collection, s.collection)
    await s.close()
