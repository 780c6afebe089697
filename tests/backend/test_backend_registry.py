"""The SQLite document registry: dedup, re-queue, versions, persistence."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from backend.registry import Registry, Status


def add(reg: Registry, content: str, filename: str | None = "a.txt") -> tuple[str, bool]:
    doc, new = reg.add(content_hash=content, filename=filename, kind="txt", size_bytes=3)
    return doc.id, new


def test_dedup_returns_the_existing_document(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    first, new1 = add(reg, "h1")
    again, new2 = add(reg, "h1", filename="other.txt")
    assert (new1, new2) == (True, False)
    assert again == first
    assert reg.get(first).filename == "a.txt"  # type: ignore[union-attr]


def test_concurrent_identical_adds_create_one_document(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(add(reg, "same"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({doc_id for doc_id, _ in results}) == 1
    assert sum(new for _, new in results) == 1


def test_unique_index_holds_across_connections(tmp_path: Path) -> None:
    Registry(tmp_path / "r.db")
    db = sqlite3.connect(tmp_path / "r.db")
    indexes = {row[1]: row[2] for row in db.execute("PRAGMA index_list(documents)")}
    assert indexes["documents_content_hash"] == 1  # unique
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failed_content_is_requeued_under_the_same_id(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    doc_id, _ = add(reg, "h1")
    reg.update(doc_id, status=Status.PARSING)
    reg.mark_failed(doc_id, "boom")
    assert reg.get(doc_id).status == Status.FAILED  # type: ignore[union-attr]
    again, new = add(reg, "h1", filename="retry.txt")
    doc = reg.get(again)
    assert new and again == doc_id
    assert doc is not None and doc.status == Status.QUEUED and doc.error is None
    assert doc.filename == "retry.txt"


def test_mark_failed_leaves_deleting_alone(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    doc_id, _ = add(reg, "h1")
    reg.update(doc_id, status=Status.DELETING)
    reg.mark_failed(doc_id, "interrupted")
    assert reg.get(doc_id).status == Status.DELETING  # type: ignore[union-attr]


def test_list_is_paginated_newest_first(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    ids = [add(reg, f"h{i}", filename=f"{i}.txt")[0] for i in range(5)]
    page, total = reg.list(limit=2, offset=0)
    assert total == 5 and [d.id for d in page] == ids[::-1][:2]
    page, _ = reg.list(limit=2, offset=4)
    assert [d.id for d in page] == [ids[0]]
    reg.mark_indexed(ids[1], 3)
    page, total = reg.list(limit=10, offset=0, status=Status.INDEXED)
    assert total == 1 and page[0].chunk_count == 3


def test_replacement_is_explicit(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    old, _ = add(reg, "v1", filename="doc.txt")
    same_name, _ = add(reg, "v2", filename="doc.txt")
    doc, _ = reg.add(content_hash="v3", filename="doc.txt", kind="txt", size_bytes=1, replaces=old)
    assert doc.replaces == old
    assert reg.get(same_name).replaces is None  # type: ignore[union-attr]
    for doc_id in (old, same_name):
        reg.mark_indexed(doc_id, 1)
    assert reg.replaced_but_present() == []  # the replacement is not indexed yet
    reg.mark_indexed(doc.id, 1)
    assert [d.id for d in reg.replaced_but_present()] == [old]


def test_extracted_text_is_counted_and_deleted_with_its_document(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    doc_id, _ = add(reg, "h1")
    reg.put_text(doc_id, b"packed", 100)
    assert reg.get_text(doc_id) == b"packed"
    assert reg.text_usage() == {"documents": 1, "bytes": 6, "raw_bytes": 100}
    reg.delete(doc_id)
    assert reg.get_text(doc_id) is None and reg.text_usage()["documents"] == 0


def test_state_survives_reopening(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    doc_id, _ = add(reg, "h1")
    reg.update(doc_id, status=Status.EMBEDDING, chunks_total=10, chunks_done=4)
    reg.close()
    reg = Registry(tmp_path / "r.db")
    assert [d.id for d in reg.unfinished()] == [doc_id]
    doc = reg.get(doc_id)
    assert doc is not None and (doc.chunks_done, doc.chunks_total) == (4, 10)
    assert reg.counts() == {"embedding": 1}
