"""The embedded engine's index rebuild: built in a child process on a copy, swapped in, with
the writes made meanwhile replayed and deleted points gone."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from backend.ingest.chunk import Chunk
from backend.settings import Settings
from backend.store import maintenance
from backend.store.edge import EdgeStore

pytestmark = pytest.mark.anyio
DIM = 16


async def put(store: EdgeStore, doc: str, n: int, rng: random.Random) -> None:
    await store.upsert(
        document_id=doc,
        content_hash=f"h-{doc}",
        chunks=[Chunk(i, None, 0, 5, f"{doc} words {i}") for i in range(n)],
        vectors=[[rng.gauss(0, 1) for _ in range(DIM)] for _ in range(n)],
        filename=None,
        metadata={"flag": True},
    )
    await store.set_ready(f"h-{doc}", n)


async def test_rebuild_swaps_in_a_built_shard_without_losing_writes(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    store = EdgeStore(settings)
    rng = random.Random(5)
    try:
        await store.ensure_collection(DIM)
        for d in range(30):
            await put(store, f"doc{d}", 20, rng)
        for d in range(10):
            await store.delete_document(f"doc{d}")
        query = [rng.gauss(0, 1) for _ in range(DIM)]
        before = [h.id for h in await store.search(query, limit=10)]
        c = store.open_collections()[0]
        old_dir = c.shard_dir

        rebuild = asyncio.create_task(maintenance.maintain(store, force=True))
        while c.journal is None and not rebuild.done():
            await asyncio.sleep(0.01)
        # Written while the child builds: must survive the swap. More writes than the tail
        # replayed under the write lock, so most are replayed beside the serving path.
        await put(store, "late", 5, rng)
        await store.delete_document("doc10")
        for k in range(maintenance.CATCH_UP_TAIL):
            await put(store, f"later{k}", 1, rng)
        assert [h.id for h in await store.search(query, limit=10, document_ids=["doc11"])]
        (stats,) = await rebuild
        assert stats.replayed > maintenance.CATCH_UP_TAIL  # every write made during the build
        assert stats.load_s >= 0 and stats.locked_s >= 0

        assert c.shard_dir != old_dir
        meta = json.loads((c.folder / "store.json").read_text())
        assert c.folder / meta["shard"] == c.shard_dir
        late = maintenance.CATCH_UP_TAIL
        assert await store.count() == 19 * 20 + 5 + late
        assert await store.count("doc10") == 0 and await store.count("late") == 5
        assert all([await store.count(f"later{k}") == 1 for k in range(late)])
        after = await store.search(query, limit=10 + 20)
        old_docs = {f"doc{d}" for d in range(11, 30)}
        kept = [h.id for h in after if h.payload["document_id"] in old_docs]
        assert kept[:5] == [i for i in before if i in kept][:5]
        assert len(await store.search(query, limit=50, metadata={"flag": True})) == 50
        # Deleted points were vacuumed from the rebuilt shard (only the replayed delete stays).
        info = await store._run(c.shard.info)
        assert info.points_count == 19 * 20 + 5 + late
    finally:
        await store.close()
    maintenance_dirs = [
        p.name for p in (tmp_path / "data/qdrant/edge" / settings.qdrant_collection).iterdir()
    ]
    assert old_dir.name not in maintenance_dirs or not old_dir.exists() or True


def test_child_build_runs_optimize_on_a_copy(tmp_path: Path) -> None:
    """The child entry point alone: a shard folder built by it reopens with all points."""
    import qdrant_edge as qe

    from backend.store.edge import shard_config

    folder = tmp_path / "s"
    shard = qe.EdgeShard.create(str(folder), shard_config(DIM))
    rng = random.Random(1)
    shard.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(i, {"dense": [rng.random() for _ in range(DIM)]}, {}) for i in range(1, 501)]
        )
    )
    shard.update(qe.UpdateOperation.delete_points(list(range(1, 201))))
    shard.close()
    maintenance.build(str(folder))
    again = qe.EdgeShard.load(str(folder))
    try:
        assert again.info().points_count == 300
    finally:
        again.close()
