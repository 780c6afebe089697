"""Move a store written by earlier versions (qdrant-client local mode in QDRANT_PATH) into the
embedded engine, so an upgrade loses no document.

Runs by itself when the backend starts on such a folder (progress in the log), or by hand:
    python -m backend.store.migrate            (with the backend's settings / .env)
Every point is copied with its vectors; payloads get this version's layout (`ready` and boolean
metadata as 0/1, see `backend.store.base`). The old files are then moved, not deleted, to
QDRANT_PATH/local-mode-migrated/ (remove that folder once the new store is checked).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from backend.settings import Settings
from backend.store.base import DENSE, SPARSE, StoreError
from backend.store.edge import Collection, edge_root

log = logging.getLogger("ragstack.backend.store.migrate")
BATCH = 256
MOVED_TO = "local-mode-migrated"
LEGACY_FILES = ("meta.json", "collection", ".lock")


def legacy_layout(folder: Path) -> bool:
    """True when `folder` holds a qdrant-client local-mode store."""
    return (folder / "meta.json").is_file() and (folder / "collection").is_dir()


def convert_payload(payload: dict[str, Any]) -> dict[str, Any]:
    out = dict(payload)
    out["ready"] = int(bool(payload.get("ready")))
    metadata = payload.get("metadata") or {}
    out["metadata_bools"] = {k: int(v) for k, v in metadata.items() if isinstance(v, bool)}
    return out


def _edge_point(record: Any) -> qe.Point:
    vectors = record.vector or {}
    sparse = vectors.get(SPARSE)
    return qe.Point(
        str(record.id),
        {
            DENSE: [float(x) for x in vectors[DENSE]],
            SPARSE: qe.SparseVector(
                list(sparse.indices) if sparse else [], list(sparse.values) if sparse else []
            ),
        },
        convert_payload(record.payload or {}),
    )


def migrate(settings: Settings) -> int:
    """Copy every local-mode collection into the embedded engine; returns points copied."""
    from qdrant_client import QdrantClient

    folder = settings.qdrant_folder
    if not legacy_layout(folder):
        return 0
    root = edge_root(settings)
    started = time.monotonic()
    log.warning(
        "found a store written by an earlier version (qdrant-client local mode) in %s: "
        "migrating it to the embedded engine; this runs once",
        folder,
    )
    try:
        client = QdrantClient(path=str(folder))
    except RuntimeError as exc:
        raise StoreError(
            f"cannot open the old store in {folder} to migrate it ({exc}); stop the process "
            "using it and run `python -m backend.store.migrate`",
            retry_after=None,
        ) from None
    total = 0
    try:
        for desc in client.get_collections().collections:
            name = desc.name
            target = root / name
            if target.exists():
                # A half-done earlier attempt: start this collection again.
                shutil.rmtree(target)
            info = client.get_collection(name)
            vectors = info.config.params.vectors
            dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
            if dense is None:
                log.warning("collection %s has no %r vector: not migrated", name, DENSE)
                continue
            count = client.count(name, exact=True).count
            c = Collection.create(target, dense.size)
            done = 0
            offset = None
            last_log = time.monotonic()
            try:
                while True:
                    records, offset = client.scroll(
                        name, limit=BATCH, offset=offset, with_payload=True, with_vectors=True
                    )
                    if records:
                        c.shard.update(
                            qe.UpdateOperation.upsert_points([_edge_point(r) for r in records])
                        )
                        done += len(records)
                    if time.monotonic() - last_log > 5 or offset is None:
                        log.warning("migrating %s: %d / %d points", name, done, count)
                        last_log = time.monotonic()
                    if offset is None:
                        break
                c.shard.flush()
            finally:
                c.shard.close()
            total += done
    finally:
        client.close()
    moved = folder / MOVED_TO
    moved.mkdir(exist_ok=True)
    for item in LEGACY_FILES:
        if (folder / item).exists():
            shutil.move(str(folder / item), str(moved / item))
    log.warning(
        "migration done: %d points in %.1f s; the old files are in %s (delete it once checked)",
        total,
        time.monotonic() - started,
        moved,
    )
    return total


def main() -> None:
    from backend.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = get_settings()
    if settings.qdrant_url:
        raise SystemExit("QDRANT_URL is set: a server needs no migration")
    if not legacy_layout(settings.qdrant_folder):
        raise SystemExit(f"nothing to migrate in {settings.qdrant_folder}")
    print(f"migrated {migrate(settings)} points")


if __name__ == "__main__":
    main()
