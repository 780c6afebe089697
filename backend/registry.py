"""The document registry: one SQLite database (stdlib sqlite3, WAL) under DATA_DIR.

It is the source of truth for a document's lifecycle; Qdrant only holds chunks. Calls are short
and run on the event loop thread on purpose: with WAL and synchronous=NORMAL a commit does not
fsync, so a write costs microseconds and the single connection serializes all writers, which is
what makes "insert unless the content hash exists" race-free.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any


class Status(StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    FAILED = "failed"
    # Internal: chunks are being removed; the row goes once they are gone.
    DELETING = "deleting"


IN_PROGRESS = (Status.QUEUED, Status.PARSING, Status.EMBEDDING)

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    content_hash TEXT NOT NULL,
    filename TEXT,
    kind TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    pages INTEGER,
    chunks_done INTEGER NOT NULL DEFAULT 0,
    chunks_total INTEGER,
    chunk_count INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    indexed_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS documents_content_hash ON documents(content_hash);
CREATE INDEX IF NOT EXISTS documents_filename ON documents(filename);
CREATE INDEX IF NOT EXISTS documents_status ON documents(status);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Document:
    id: str
    seq: int
    content_hash: str
    filename: str | None
    kind: str
    size_bytes: int
    status: Status
    created_at: str
    updated_at: str
    pages: int | None = None
    chunks_done: int = 0
    chunks_total: int | None = None
    chunk_count: int | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    indexed_at: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Document:
        data = dict(row)
        data["status"] = Status(data["status"])
        data["metadata"] = json.loads(data["metadata"])
        return cls(**data)


class DuplicateBeingDeleted(Exception):
    """Identical content exists but is being deleted right now; the caller may retry."""


class Registry:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # isolation_level=None: autocommit, with explicit BEGIN IMMEDIATE where several
        # statements must be atomic.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Document | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return Document.from_row(row) if row else None

    def _many(self, sql: str, args: tuple[Any, ...] = ()) -> list[Document]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [Document.from_row(r) for r in rows]

    # -- creation ----------------------------------------------------------------------------------

    def add(
        self,
        *,
        content_hash: str,
        filename: str | None,
        kind: str,
        size_bytes: int,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Document, bool]:
        """Register a document, or return the one with the same content.

        Returns (document, needs_ingest). An existing failed document with the same content is
        re-queued under its id (the new upload is a retry); an existing live one is returned as is.
        """
        stamp = now()
        meta = json.dumps(metadata or {})
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO documents (id, content_hash, filename, kind, size_bytes, status,"
                " metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(content_hash) DO NOTHING",
                (
                    str(uuid.uuid4()),
                    content_hash,
                    filename,
                    kind,
                    size_bytes,
                    Status.QUEUED,
                    meta,
                    stamp,
                    stamp,
                ),
            )
            created = cur.rowcount == 1
            row = db.execute(
                "SELECT * FROM documents WHERE content_hash = ?", (content_hash,)
            ).fetchone()
            doc = Document.from_row(row)
            if created:
                return doc, True
            if doc.status == Status.DELETING:
                raise DuplicateBeingDeleted(doc.id)
            if doc.status != Status.FAILED:
                return doc, False
            # A retry of failed content: fresh row values, same id; seq moves to the end so the
            # retry counts as the newest version of its filename.
            db.execute("DELETE FROM documents WHERE id = ?", (doc.id,))
            values = (doc.id, content_hash, filename, kind, size_bytes, Status.QUEUED, meta)
            db.execute(
                "INSERT INTO documents (id, content_hash, filename, kind, size_bytes, status,"
                " metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, stamp, stamp),
            )
            row = db.execute("SELECT * FROM documents WHERE id = ?", (doc.id,)).fetchone()
            return Document.from_row(row), True

    # -- reads -------------------------------------------------------------------------------------

    def get(self, doc_id: str) -> Document | None:
        return self._one("SELECT * FROM documents WHERE id = ?", (doc_id,))

    def list(
        self, *, limit: int, offset: int, status: Status | None = None
    ) -> tuple[list[Document], int]:
        if status is None:
            where, args = "WHERE status != ?", (str(Status.DELETING),)
        else:
            where, args = "WHERE status = ?", (str(status),)
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM documents {where}", args).fetchone()[0]
        docs = self._many(
            f"SELECT * FROM documents {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return docs, total

    def statuses(self, ids: list[str]) -> dict[str, Status]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, status FROM documents WHERE id IN ({marks})", tuple(ids)
            ).fetchall()
        return {r["id"]: Status(r["status"]) for r in rows}

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) AS n FROM documents GROUP BY status"
            ).fetchall()
        return {r["status"]: r["n"] for r in rows}

    def unfinished(self) -> list[Document]:
        marks = ",".join("?" * len(IN_PROGRESS))
        return self._many(
            f"SELECT * FROM documents WHERE status IN ({marks}) ORDER BY seq",
            tuple(str(s) for s in IN_PROGRESS),
        )

    def deleting(self) -> list[Document]:
        return self._many("SELECT * FROM documents WHERE status = ?", (str(Status.DELETING),))

    def older_versions(self, doc: Document) -> list[Document]:
        """Finished documents with the same filename, registered before `doc`."""
        if doc.filename is None:
            return []
        return self._many(
            "SELECT * FROM documents WHERE filename = ? AND seq < ? AND status IN (?, ?)",
            (doc.filename, doc.seq, str(Status.INDEXED), str(Status.FAILED)),
        )

    def newer_version_indexed(self, doc: Document) -> bool:
        if doc.filename is None:
            return False
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM documents WHERE filename = ? AND seq > ? AND status = ?",
                (doc.filename, doc.seq, str(Status.INDEXED)),
            ).fetchone()
        return row is not None

    def duplicate_indexed_filenames(self) -> list[Document]:
        """Indexed documents that a newer indexed document of the same filename supersedes
        (left behind when the process stopped between "indexed" and removing the old version)."""
        return self._many(
            "SELECT d.* FROM documents d WHERE d.status = ? AND d.filename IS NOT NULL AND EXISTS"
            " (SELECT 1 FROM documents n WHERE n.filename = d.filename AND n.seq > d.seq"
            " AND n.status = ?)",
            (str(Status.INDEXED), str(Status.INDEXED)),
        )

    # -- updates -----------------------------------------------------------------------------------

    def update(self, doc_id: str, **fields: Any) -> None:
        if "metadata" in fields:
            fields["metadata"] = json.dumps(fields["metadata"])
        if "status" in fields:
            fields["status"] = str(fields["status"])
        fields["updated_at"] = now()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(
                f"UPDATE documents SET {cols} WHERE id = ?", (*fields.values(), doc_id)
            )

    def mark_failed(self, doc_id: str, error: str) -> None:
        # Only a live document can fail; a deleting one must stay deleting.
        marks = ",".join("?" * len(IN_PROGRESS))
        with self._lock:
            self._db.execute(
                f"UPDATE documents SET status = ?, error = ?, chunks_done = 0, chunk_count = 0,"
                f" updated_at = ? WHERE id = ? AND status IN ({marks})",
                (str(Status.FAILED), error, now(), doc_id, *(str(s) for s in IN_PROGRESS)),
            )

    def mark_indexed(self, doc_id: str, chunk_count: int) -> None:
        stamp = now()
        self.update(
            doc_id,
            status=Status.INDEXED,
            chunk_count=chunk_count,
            chunks_done=chunk_count,
            chunks_total=chunk_count,
            error=None,
            indexed_at=stamp,
        )

    def delete(self, doc_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
