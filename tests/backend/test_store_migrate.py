"""A DATA_DIR written by the previous release (qdrant-client local mode, `ready: true`
booleans) is migrated to the embedded engine when the store opens, and nothing is lost."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from backend.settings import Settings
from backend.store import VectorStore
from backend.store.edge import EdgeStore
from backend.store.migrate import MOVED_TO, legacy_layout
from backend.store.sparse import BM25Encoder

pytestmark = pytest.mark.anyio
DIM = 8
NAMESPACE = uuid.UUID("8f0d8a4e-5b7e-4c61-9d0f-2d7f5c3e9a10")


def old_release_folder(settings: Settings, docs: int, chunks: int) -> list[tuple[str, str]]:
    """What the previous backend's store wrote, call for call (create_collection with the
    named vectors, upsert with its payload layout, then set_payload ready=True)."""
    rng = random.Random(3)
    client = QdrantClient(path=str(settings.qdrant_folder))
    client.create_collection(
        settings.qdrant_collection,
        vectors_config={"dense": qm.VectorParams(size=DIM, distance=qm.Distance.COSINE)},
        sparse_vectors_config={"bm25": qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
    )
    bm25 = BM25Encoder()
    written = []
    for d in range(docs):
        doc_id, content_hash = f"doc-{d}", f"hash-{d}"
        texts = [f"document {d} chunk {i} about topic{rng.randint(0, 9)}" for i in range(chunks)]
        sparse = bm25.encode_documents(texts)
        points = []
        for i, text in enumerate(texts):
            pid = str(uuid.uuid5(NAMESPACE, f"{content_hash}:{i}"))
            points.append(
                qm.PointStruct(
                    id=pid,
                    vector={
                        "dense": [rng.gauss(0, 1) for _ in range(DIM)],
                        "bm25": qm.SparseVector(indices=sparse[i][0], values=sparse[i][1]),
                    },
                    payload={
                        "document_id": doc_id,
                        "chunk_index": i,
                        "page": None,
                        "start": 0,
                        "end": len(text),
                        "text": text,
                        "filename": f"{doc_id}.txt",
                        "metadata": {"public": d % 2 == 0, "year": 2000 + d},
                        "ready": False,
                    },
                )
            )
            written.append((doc_id, pid))
        client.upsert(settings.qdrant_collection, points=points, wait=True)
        client.set_payload(
            settings.qdrant_collection,
            payload={"ready": True},
            points=[p.id for p in points],
            wait=True,
        )
    client.close()
    return written


async def test_old_local_mode_folder_is_migrated_with_every_chunk(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    written = old_release_folder(settings, docs=30, chunks=5)
    assert legacy_layout(settings.qdrant_folder)

    store = VectorStore(settings)  # the default engine: migrates on open
    try:
        assert isinstance(store, EdgeStore)
        assert await store.count() == len(written)
        for doc_id in {d for d, _ in written}:
            assert await store.count(doc_id) == 5
        hits = await store.retrieve([pid for _, pid in written])
        assert len(hits) == len(written)
        assert all(h.payload["ready"] == 1 for h in hits)
        # Every chunk is still found by search: dense over all, and keyword by its own text.
        dense = await store.search([1.0] * DIM, limit=len(written))
        assert {h.id for h in dense} == {pid for _, pid in written}
        for doc_id in ("doc-0", "doc-17"):
            found = await store.search(
                None,
                text=f"document {doc_id[4:]} chunk",
                mode="sparse",
                limit=5,
                document_ids=[doc_id],
            )
            assert len(found) == 5
        # Boolean metadata filters work on migrated data.
        public = await store.search([1.0] * DIM, limit=200, metadata={"public": True})
        assert {h.payload["document_id"] for h in public} == {f"doc-{d}" for d in range(0, 30, 2)}
    finally:
        await store.close()
    # The old files were moved aside, not deleted, and a second open does not migrate again.
    assert not legacy_layout(settings.qdrant_folder)
    assert (settings.qdrant_folder / MOVED_TO / "collection").is_dir()
    again = VectorStore(settings)
    try:
        assert await again.count() == len(written)
    finally:
        await again.close()
