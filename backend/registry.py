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
-- The extracted text of each document (zlib-compressed JSON pages), so that a re-index never
-- needs the original file again.
CREATE TABLE IF NOT EXISTS texts (
    document_id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    raw_bytes INTEGER NOT NULL
);
-- The vector dimension each collection was created with (a query embedded by another model
-- must not be sent to it).
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    dimension INTEGER NOT NULL,
    embedder TEXT NOT NULL DEFAULT ''
);
-- Long-running jobs (re-index): one JSON row each, so a restart finds where a job stood.
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
-- Documents a running re-index has written to its new collection, with their new chunk counts
-- (applied to `documents` at the switch).
CREATE TABLE IF NOT EXISTS reindexed (
    document_id TEXT PRIMARY KEY,
    chunk_count INTEGER NOT NULL
);
"""

# Columns added after the first release: (name, declaration). Added on open when missing, so a
# registry written by an older version keeps working (its documents simply replace nothing).
MIGRATIONS = [("replaces", "TEXT")]


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
    # The document this one replaces once it is indexed (an explicit `replace` at upload).
    replaces: str | None = None

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
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            have = {r["name"] for r in self._db.execute("PRAGMA table_info(documents)")}
            for name, decl in MIGRATIONS:
                if name not in have:
                    self._db.execute(f"ALTER TABLE documents ADD COLUMN {name} {decl}")

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
        replaces: str | None = None,
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
                " metadata, created_at, updated_at, replaces) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
                    replaces,
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
                " metadata, created_at, updated_at, replaces)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, stamp, stamp, replaces),
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

    def replaced_but_present(self) -> list[Document]:
        """Documents that an indexed document explicitly replaces but that still exist (left
        behind when the process stopped between "indexed" and removing the old one)."""
        return self._many(
            "SELECT d.* FROM documents d WHERE d.status != ? AND EXISTS"
            " (SELECT 1 FROM documents n WHERE n.replaces = d.id AND n.status = ?)",
            (str(Status.DELETING), str(Status.INDEXED)),
        )

    def content_hashes(self, ids: list[str]) -> dict[str, str]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, content_hash FROM documents WHERE id IN ({marks})", tuple(ids)
            ).fetchall()
        return {r["id"]: r["content_hash"] for r in rows}

    # -- extracted text ----------------------------------------------------------------------------

    def put_text(self, doc_id: str, data: bytes, raw_bytes: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO texts (document_id, data, raw_bytes) VALUES (?, ?, ?)",
                (doc_id, data, raw_bytes),
            )

    def get_text(self, doc_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM texts WHERE document_id = ?", (doc_id,)
            ).fetchone()
        return None if row is None else bytes(row["data"])

    def text_usage(self) -> dict[str, int]:
        """Stored extracted text: documents, compressed bytes, uncompressed bytes."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(data)), 0) AS stored,"
                " COALESCE(SUM(raw_bytes), 0) AS raw FROM texts"
            ).fetchone()
        return {"documents": row["n"], "bytes": row["stored"], "raw_bytes": row["raw"]}

    # -- collections -------------------------------------------------------------------------------

    def set_embedder(self, collection: str, dimension: int, embedder: str) -> None:
        """Record which embedder wrote a collection (first writer wins: a collection holds one
        model's vectors)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO collections (name, dimension, embedder) VALUES (?, ?, ?)",
                (collection, dimension, embedder),
            )

    def embedder_of(self, collection: str) -> tuple[int, str] | None:
        """(dimension, embedder tag) of the vectors in `collection`, when recorded."""
        with self._lock:
            row = self._db.execute(
                "SELECT dimension, embedder FROM collections WHERE name = ?", (collection,)
            ).fetchone()
        return None if row is None else (int(row["dimension"]), str(row["embedder"]))

    def forget_collection(self, collection: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM collections WHERE name = ?", (collection,))

    # -- jobs --------------------------------------------------------------------------------------

    def get_job(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM jobs WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row["body"])

    def put_job(self, name: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO jobs (name, body) VALUES (?, ?)", (name, json.dumps(body))
            )

    def mark_reindexed(self, doc_id: str, chunk_count: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO reindexed (document_id, chunk_count) VALUES (?, ?)",
                (doc_id, chunk_count),
            )

    def reindexed_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM reindexed").fetchone()[0])

    def not_reindexed(self, limit: int) -> list[Document]:
        """Indexed documents the running re-index has not written yet, oldest first."""
        return self._many(
            "SELECT * FROM documents d WHERE d.status = ? AND NOT EXISTS"
            " (SELECT 1 FROM reindexed r WHERE r.document_id = d.id) ORDER BY seq LIMIT ?",
            (str(Status.INDEXED), limit),
        )

    def not_reindexed_count(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM documents d WHERE d.status = ? AND NOT EXISTS"
                " (SELECT 1 FROM reindexed r WHERE r.document_id = d.id)",
                (str(Status.INDEXED),),
            ).fetchone()
        return int(row[0])

    def apply_reindexed(self) -> None:
        """The switch happened: the documents' chunk counts become the new collection's."""
        with self._tx() as db:
            db.execute(
                "UPDATE documents SET chunk_count = r.chunk_count, chunks_done = r.chunk_count,"
                " chunks_total = r.chunk_count FROM reindexed r WHERE r.document_id = documents.id"
            )
            db.execute("DELETE FROM reindexed")

    def clear_reindexed(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM reindexed")

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
        with self._tx() as db:
            db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
            db.execute("DELETE FROM texts WHERE document_id = ?", (doc_id,))
