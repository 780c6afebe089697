"""Index maintenance for the embedded engine, off the serving path.

Qdrant Edge builds HNSW indexes and drops deleted points only in `optimize()`, which holds the
GIL for its whole run (measured: 16 s at 10k points, > 157 s at 100k), so calling it in the
serving process would stall every request. Instead a collection is rebuilt beside itself:

1. under the write lock (writes wait; reads go on), flush the live shard and copy its folder;
2. a child process (`python -m backend.store.maintenance <folder>`) opens the copy and runs
   `optimize()` there: the HNSW index is built and deleted points are vacuumed, on the child's
   GIL, while the server keeps answering from the live shard and takes new writes, which are
   also kept in a journal;
3. the built shard is opened and the journal replayed on it while writes go on (they keep
   feeding the journal); under the write lock, the last few writes are replayed and
   `store.json` renamed to point at it; the old shard is closed a little later (queries still
   running on it finish) and its folder removed.

A rebuild starts when a collection has `REBUILD_MIN_POINTS` points and its writes since the
last build (upserts and deletes, in points) reach `REBUILD_FRACTION` of its size; below that
size brute force in Rust is fast (~1.3 ms per dense query at 10k points). A failed rebuild
leaves the live shard untouched and is retried at the next check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import qdrant_edge as qe

if TYPE_CHECKING:
    from backend.store.edge import Collection, EdgeStore

log = logging.getLogger("ragstack.backend.store.maintenance")
REBUILD_MIN_POINTS = 20_000
REBUILD_FRACTION = 0.2
CHECK_INTERVAL_S = 60.0
# Queries that picked the old shard just before the swap get this long to finish on it.
CLOSE_OLD_AFTER_S = 10.0
BUILD_TIMEOUT_S = 6 * 3600.0
# Writes made during a build are replayed on the built shard outside the write lock until at
# most this many are left; those are replayed under it, with the swap.
CATCH_UP_TAIL = 16
BUILD_NICE = 10


class Journal:
    """Writes made to a collection while its rebuild runs, replayed on the rebuilt shard."""

    def __init__(self) -> None:
        self.ops: list[qe.UpdateOperation] = []


def record_write(store: EdgeStore, c: Collection, op: qe.UpdateOperation, points: int) -> None:
    """Called after every write (see EdgeStore._update): counts writes, feeds a journal."""
    c.writes_since_build += points
    journal: Journal | None = getattr(c, "journal", None)
    if journal is not None:
        journal.ops.append(op)


@dataclass(frozen=True)
class RebuildStats:
    """What one rebuild cost, in seconds; `flush_s` and `load_s` are the calls that hold the GIL
    (pause the serving process), the rest runs beside the serving path."""

    collection: str
    flush_s: float
    copy_s: float
    build_s: float
    load_s: float
    replayed: int
    swap_s: float  # from the end of the build to the new shard serving (load + replay)
    locked_s: float  # writes waited this long for the last replay and the swap


def needs_rebuild(c: Collection, points: int) -> bool:
    return points >= REBUILD_MIN_POINTS and c.writes_since_build >= REBUILD_FRACTION * points


async def maintain(store: EdgeStore, *, force: bool = False) -> list[RebuildStats]:
    """Rebuild every open collection that needs it (one at a time); what each rebuild cost."""
    done: list[RebuildStats] = []
    for c in list(store.open_collections()):
        if c.rebuilding:
            continue
        info = await store._run(c.shard.info)
        if force or needs_rebuild(c, info.points_count):
            stats = await rebuild(store, c)
            if stats is not None:
                done.append(stats)
    return done


async def rebuild(store: EdgeStore, c: Collection) -> RebuildStats | None:
    """Rebuild `c` beside itself and swap it in; None when the build failed (logged)."""
    c.rebuilding = True
    started = time.monotonic()
    new_name = f"shard-{uuid.uuid4().hex[:8]}"
    new_dir = c.folder / new_name
    shard: qe.EdgeShard | None = None
    try:
        async with store.write_lock:
            t = time.monotonic()
            await store._run(c.shard.flush)
            flushed = time.monotonic() - t
            await asyncio.to_thread(shutil.copytree, c.shard_dir, new_dir)
            # The WAL's lock is not part of the data: the copy must be openable.
            c.journal = Journal()
            c.writes_since_build = 0
        copied = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "backend.store.maintenance",
            str(new_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), BUILD_TIMEOUT_S)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"index build exited {proc.returncode}: {out.decode()[-2000:]}")
        built = time.monotonic()
        # Nobody else sees the built shard yet: load it and replay the writes made during the
        # build without the write lock (on a large store that backlog is minutes of ingest);
        # only the last few writes are replayed under the lock, just before the swap.
        t = time.monotonic()
        shard = await store._run(qe.EdgeShard.load, str(new_dir))
        loaded = time.monotonic() - t
        journal = c.journal
        replayed = 0
        while journal is not None and len(journal.ops) > CATCH_UP_TAIL:
            backlog = journal.ops[:]
            for op in backlog:
                await store._run(shard.update, op)
            del journal.ops[: len(backlog)]  # new writes were appended behind them
            replayed += len(backlog)
        async with store.write_lock:
            t = time.monotonic()
            journal, c.journal = c.journal, None
            tail = journal.ops if journal else []
            for op in tail:
                await store._run(shard.update, op)
            replayed += len(tail)
            old_dir = c.shard_dir
            old = c.swap(new_name, shard)
            shard = None  # serving now: the store closes it
            locked = time.monotonic() - t
        stats = RebuildStats(
            collection=c.name,
            flush_s=flushed,
            copy_s=copied - started - flushed,
            build_s=built - copied,
            load_s=loaded,
            replayed=replayed,
            swap_s=time.monotonic() - built,
            locked_s=locked,
        )
        # flush and load hold the GIL (they pause the process); the rest does not.
        log.info(
            "rebuilt collection %s: flush %.2f s + copy %.1f s, index build %.1f s (child "
            "process), load %.2f s, %d writes replayed, swap done %.1f s after the build "
            "(writes held %.2f s)",
            stats.collection,
            stats.flush_s,
            stats.copy_s,
            stats.build_s,
            stats.load_s,
            stats.replayed,
            stats.swap_s,
            stats.locked_s,
        )
        store.retiring.append((old, old_dir))
        asyncio.get_running_loop().call_later(
            CLOSE_OLD_AFTER_S, lambda: asyncio.ensure_future(retire(store, old, old_dir))
        )
        return stats
    except BaseException as exc:
        c.journal = None
        if shard is not None:  # loaded but not swapped in
            with contextlib.suppress(Exception):
                await asyncio.to_thread(shard.close)
        if isinstance(exc, Exception):
            log.warning("index rebuild of %s failed (the live shard is unchanged): %s", c.name, exc)
        await asyncio.to_thread(shutil.rmtree, new_dir, True)
        if not isinstance(exc, Exception):
            raise
        return None
    finally:
        c.rebuilding = False


async def retire(store: EdgeStore, shard: qe.EdgeShard, folder: Any) -> None:
    """Close a replaced shard and remove its folder (once; the store's close does the rest)."""
    if (shard, folder) not in store.retiring:
        return
    store.retiring.remove((shard, folder))
    with contextlib.suppress(Exception):
        await asyncio.to_thread(shard.close)
    await asyncio.to_thread(shutil.rmtree, folder, True)


async def run_forever(store: EdgeStore) -> None:
    """The background task the embedded store starts: every CHECK_INTERVAL_S, flush (so the
    flush a rebuild starts with, which holds the GIL, only has a minute of writes to write:
    0.48 s for 100k fresh points) and rebuild what needs it."""
    while True:
        await asyncio.sleep(CHECK_INTERVAL_S)
        try:
            for c in store.open_collections():
                await store._run(c.shard.flush)
            await maintain(store)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("index maintenance failed: %s", exc)


def build(folder: str) -> None:
    """In the child: build the indexes of the shard copy in `folder` (and vacuum it). At a
    lower priority: the build is background work, it should not slow queries or ingest."""
    with contextlib.suppress(OSError):
        os.nice(BUILD_NICE)
    shard = qe.EdgeShard.load(folder)
    try:
        shard.optimize()
        shard.flush()
    finally:
        shard.close()


if __name__ == "__main__":
    build(sys.argv[1])
