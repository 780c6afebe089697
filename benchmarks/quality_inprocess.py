"""Prototype retrieval-quality measurement, all in one process (no backend, no ml-api).

Encodes a BEIR corpus (default SciFact) with the real all-MiniLM-L6-v2 through
sentence-transformers (cached under benchmarks/results/), encodes it with the backend's BM25
sparse encoder, loads both into a local-mode Qdrant (`QdrantClient(path=tmp)`: named dense vector
"dense", cosine; named sparse vector "bm25" with `Modifier.IDF`) and evaluates, with pytrec_eval:

* exact cosine in numpy (the reference the service should reproduce),
* exact BM25 in scipy (same formula as Qdrant's IDF modifier; also a parameter sweep),
* exact hybrid fusion, re-implementing Qdrant's RRF and DBSF (`fuse()`), over prefetch pool
  sizes 20..500 (it reproduces the Qdrant rows exactly, so it stands in for Qdrant in sweeps),
* dense / sparse / hybrid through Qdrant's Query API, hybrid = prefetch dense + prefetch sparse
  fused with RRF (Qdrant's default k=2, and k=60 via `RrfQuery`) or DBSF, for the `--pools`
  prefetch sizes. Local mode scores sparse vectors in pure Python (~150 ms a query at 5k
  points), so this part takes ~30 min for the 809 queries; `--no-qdrant` skips it.

Results and the recommendation drawn from them: benchmarks/README.md.

Each document is indexed whole (`title + " " + text`; MiniLM truncates at 256 wordpieces), one
point per document, so no chunk aggregation is involved here.

    uv run python benchmarks/quality_inprocess.py            # full SciFact train: 809 queries
    uv run python benchmarks/quality_inprocess.py --limit-queries 100 --no-sweep
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from backend.store.sparse import BM25Encoder
from benchmarks.harness.beir import DEFAULT_DATA, METRICS, evaluate, load_beir, select_subset
from benchmarks.harness.embed_cache import RESULTS, reference_embeddings
from benchmarks.harness.topk import TOP, Run, top_k_runs

# Lucene's EnglishAnalyzer default stop set (33 words), for comparison with the NLTK list.
_LUCENE = (
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with"
)
LUCENE_STOP_WORDS = frozenset(_LUCENE.split())

# Piped output (logs, CI) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)


# -- exact in-process scoring -----------------------------------------------------------------


def bm25_matrix(
    encoder: BM25Encoder, docs: Sequence[str], queries: Sequence[str]
) -> tuple[np.ndarray, float]:
    """Exact BM25 scores (queries x docs) exactly as Qdrant's IDF modifier computes them."""
    from scipy import sparse

    t0 = time.perf_counter()
    vocab: dict[int, int] = {}
    rows, cols, vals = [], [], []
    for r, text in enumerate(docs):
        idx, val = encoder.encode_document(text)
        for i, v in zip(idx, val, strict=True):
            rows.append(r)
            cols.append(vocab.setdefault(i, len(vocab)))
            vals.append(v)
    encode_s = time.perf_counter() - t0
    n = len(docs)
    dmat = sparse.csr_matrix((vals, (rows, cols)), shape=(n, len(vocab)), dtype=np.float64)
    df = np.bincount(cols, minlength=len(vocab))
    idf = np.log((n - df + 0.5) / (df + 0.5) + 1.0)
    qrows, qcols, qvals = [], [], []
    for r, text in enumerate(queries):
        idx, _ = encoder.encode_query(text)
        for i in idx:
            c = vocab.get(i)
            if c is not None:
                qrows.append(r)
                qcols.append(c)
                qvals.append(idf[c])
    qmat = sparse.csr_matrix((qvals, (qrows, qcols)), shape=(len(queries), len(vocab)))
    scores = (qmat @ dmat.T).toarray()
    # a document sharing no term with the query is not a hit (Qdrant skips it)
    hit = (qmat.astype(bool).astype(np.float64) @ dmat.T.astype(bool).astype(np.float64)).toarray()
    scores[hit == 0] = -np.inf
    return scores, encode_s


def candidates(scores: np.ndarray, pool: int) -> list[list[tuple[int, float]]]:
    """Per query, the top `pool` (doc index, raw score), best first; non-hits (-inf) left out."""
    out = []
    for s in scores:
        k = min(pool, len(s))
        part = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
        part = part[np.argsort(-s[part], kind="stable")]
        out.append([(int(j), float(s[j])) for j in part if np.isfinite(s[j])])
    return out


def fuse(
    qids: Sequence[str],
    dids: Sequence[str],
    lists: Sequence[list[list[tuple[int, float]]]],
    method: str,
    k: float = 2.0,
    limit: int = TOP,
) -> Run:
    """Exact re-implementation of Qdrant's fusion of prefetch results (qdrant_client.hybrid.fusion).

    `rrf`: sum of 1 / (rank + k), rank counted from 0 - Qdrant's convention (its default k=2 is
    the textbook 1 / (k' + rank_from_1) with k' = 1). `dbsf`: each list's scores normalised to
    (s - (mean - 3 sd)) / (6 sd) (sample sd), then summed.
    """
    fused: Run = {}
    for row, qid in enumerate(qids):
        acc: dict[int, float] = {}
        for per_query in lists:
            cand = per_query[row]
            if method == "rrf":
                for rank, (j, _s) in enumerate(cand):
                    acc[j] = acc.get(j, 0.0) + 1.0 / (rank + k)
            elif method == "dbsf":
                if not cand:
                    continue
                vals = np.array([sc for _j, sc in cand])
                sd = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
                if sd == 0.0:
                    norm = [0.5] * len(cand)
                else:
                    low = vals.mean() - 3 * sd
                    norm = list((vals - low) / (6 * sd))
                for (j, _s), v in zip(cand, norm, strict=True):
                    acc[j] = acc.get(j, 0.0) + float(v)
            else:
                raise ValueError(method)
        # ties keep first-seen order (earlier prefetch first), as Qdrant's stable sort does
        order = sorted(acc.items(), key=lambda kv: -kv[1])[:limit]
        fused[qid] = {dids[j]: float(len(order) - i) for i, (j, _v) in enumerate(order)}
    return fused


# -- Qdrant local mode ------------------------------------------------------------------------


def build_qdrant(
    path: Path,
    dense: np.ndarray,
    sparse_vecs: Sequence[tuple[list[int], list[float]]],
    dids: Sequence[str],
):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    client.create_collection(
        "scifact",
        vectors_config={"dense": models.VectorParams(size=dense.shape[1], distance="Cosine")},
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    batch = 256
    for start in range(0, len(dids), batch):
        points = []
        for i in range(start, min(start + batch, len(dids))):
            idx, val = sparse_vecs[i]
            points.append(
                models.PointStruct(
                    id=i,
                    vector={
                        "dense": dense[i].tolist(),
                        "bm25": models.SparseVector(indices=idx, values=val),
                    },
                    payload={"beir_id": dids[i]},
                )
            )
        client.upsert("scifact", points=points, wait=True)
    return client


def qdrant_runs(
    client,
    qids: Sequence[str],
    make_request: Callable[[int], dict],
) -> tuple[Run, list[float]]:
    run: Run = {}
    lat: list[float] = []
    for row, qid in enumerate(qids):
        t0 = time.perf_counter()
        res = client.query_points("scifact", limit=TOP, with_payload=True, **make_request(row))
        lat.append((time.perf_counter() - t0) * 1000)
        hits = [(p.payload["beir_id"], p.score) for p in res.points]
        run[qid] = {d: float(len(hits) - i) for i, (d, _s) in enumerate(hits)}
    return run, lat


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--split", default="train")
    ap.add_argument("--limit-queries", type=int, default=None)
    ap.add_argument("--limit-docs", type=int, default=None)
    ap.add_argument("--pools", default="50,100", help="prefetch limits to try for hybrid")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the encoding")
    ap.add_argument("--no-sweep", action="store_true", help="skip the BM25 parameter sweep")
    ap.add_argument("--no-qdrant", action="store_true", help="only the exact in-process rows")
    ap.add_argument("--json", type=Path, default=RESULTS / "quality_inprocess.json")
    args = ap.parse_args()

    data = load_beir(args.data, args.split)
    data = select_subset(data, args.limit_queries, args.limit_docs)
    dids = list(data.corpus)
    qids = list(data.queries)
    doc_texts = [data.corpus[d].full_text for d in dids]
    q_texts = [data.queries[q] for q in qids]
    console.print(f"[bold]{args.data}[/]: {len(dids)} documents, {len(qids)} queries")

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    c_emb, q_emb = reference_embeddings(args.data, args.split, dids, qids, threads=args.threads)
    timings["embed (or load cache) s"] = time.perf_counter() - t0

    rows: list[tuple[str, dict[str, float], str]] = []

    def add(name: str, run: Run, note: str = "") -> dict[str, float]:
        m = evaluate(data.qrels, run)
        rows.append((name, m, note))
        return m

    # exact cosine reference
    t0 = time.perf_counter()
    cos = q_emb @ c_emb.T
    ref_dense = top_k_runs(qids, dids, cos, TOP)
    timings["exact cosine s"] = time.perf_counter() - t0
    add("exact cosine (numpy)", ref_dense, "reference")

    # exact BM25 with the default encoder
    encoder = BM25Encoder()
    bm, enc_s = bm25_matrix(encoder, doc_texts, q_texts)
    timings["bm25 encode corpus s"] = enc_s
    ref_sparse = top_k_runs(qids, dids, bm, TOP)
    add(f"exact BM25 (scipy) {encoder!r}", ref_sparse, "reference")
    # exact fusion, same formulas as Qdrant's, over a range of prefetch pool sizes
    for pool in (20, 50, 100, 200, 500):
        lists = [candidates(cos, pool), candidates(bm, pool)]
        add(f"exact hybrid RRF k=2 pool={pool}", fuse(qids, dids, lists, "rrf", 2))
        add(f"exact hybrid RRF k=60 pool={pool}", fuse(qids, dids, lists, "rrf", 60))
        add(f"exact hybrid DBSF pool={pool}", fuse(qids, dids, lists, "dbsf"))
        # RRF has exact ties (rank r in one list only = rank r in the other only): the
        # prefetch listed first wins them
        add(f"exact hybrid RRF k=2 pool={pool} sparse first", fuse(qids, dids, lists[::-1], "rrf"))

    sweep: list[tuple[str, dict[str, float]]] = []
    if not args.no_sweep:
        t0 = time.perf_counter()
        configs: list[tuple[str, BM25Encoder]] = []
        for avg in (32, 64, 128, 151, 256, 512):
            configs.append((f"avg_len={avg}", BM25Encoder(avg_len=avg)))
        for k1 in (0.9, 1.5, 2.0):
            configs.append((f"k1={k1}", BM25Encoder(k1=k1)))
        for b in (0.4, 0.6, 0.9, 1.0):
            configs.append((f"b={b}", BM25Encoder(b=b)))
        configs.append(("Lucene 33 stop-words", BM25Encoder(stop_words=LUCENE_STOP_WORDS)))
        configs.append(("no stop-words", BM25Encoder(stop_words=frozenset())))
        for label, enc in configs:
            s, _ = bm25_matrix(enc, doc_texts, q_texts)
            sweep.append(
                (f"{label}  ({enc!r})", evaluate(data.qrels, top_k_runs(qids, dids, s, TOP)))
            )
        timings["bm25 sweep s"] = time.perf_counter() - t0

    latencies: dict[str, list[float]] = {}
    notes: list[str] = []
    if not args.no_qdrant:
        from qdrant_client import models

        sparse_vecs = encoder.encode_documents(doc_texts)
        q_sparse = [encoder.encode_query(t) for t in q_texts]
        with tempfile.TemporaryDirectory(prefix="qdrant-local-") as tmp:
            t0 = time.perf_counter()
            client = build_qdrant(Path(tmp), c_emb, sparse_vecs, dids)
            timings["qdrant local upsert s"] = time.perf_counter() - t0

            def dense_q(i: int):
                return q_emb[i].tolist()

            def sparse_q(i: int):
                idx, val = q_sparse[i]
                return models.SparseVector(indices=idx, values=val)

            def prefetch(i: int, pool: int) -> list:
                return [
                    models.Prefetch(query=dense_q(i), using="dense", limit=pool),
                    models.Prefetch(query=sparse_q(i), using="bm25", limit=pool),
                ]

            variants: list[tuple[str, Callable[[int], dict]]] = [
                ("qdrant dense", lambda i: {"query": dense_q(i), "using": "dense"}),
                ("qdrant sparse (bm25, IDF)", lambda i: {"query": sparse_q(i), "using": "bm25"}),
            ]
            for pool in (int(p) for p in args.pools.split(",")):
                variants += [
                    (
                        f"qdrant hybrid RRF (k=2) pool={pool}",
                        lambda i, p=pool: {
                            "prefetch": prefetch(i, p),
                            "query": models.FusionQuery(fusion=models.Fusion.RRF),
                        },
                    ),
                    (
                        f"qdrant hybrid RRF k=60 pool={pool}",
                        lambda i, p=pool: {
                            "prefetch": prefetch(i, p),
                            "query": models.RrfQuery(rrf=models.Rrf(k=60)),
                        },
                    ),
                    (
                        f"qdrant hybrid DBSF pool={pool}",
                        lambda i, p=pool: {
                            "prefetch": prefetch(i, p),
                            "query": models.FusionQuery(fusion=models.Fusion.DBSF),
                        },
                    ),
                ]
            for name, req in variants:
                t0 = time.perf_counter()
                try:
                    run, lat = qdrant_runs(client, qids, req)
                except Exception as exc:  # a feature local mode lacks: report, keep going
                    notes.append(f"{name}: FAILED in local mode: {exc!r}")
                    continue
                timings[f"{name} s"] = time.perf_counter() - t0
                latencies[name] = lat
                add(name, run)
                console.print(f"  {name}: {time.perf_counter() - t0:.1f}s")
            client.close()

    # -- report ---------------------------------------------------------------------------------
    table = Table(title=f"{args.data.name}: {len(qids)} queries, {len(dids)} docs")
    table.add_column("run")
    for m in METRICS:
        table.add_column(m, justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for name, m, _note in rows:
        lat = latencies.get(name)
        p50 = f"{np.percentile(lat, 50):.1f}" if lat else ""
        p95 = f"{np.percentile(lat, 95):.1f}" if lat else ""
        table.add_row(name, *(f"{m[k]:.4f}" for k in METRICS), p50, p95)
    console.print(table)
    if sweep:
        st = Table(title="BM25 sweep (exact, scipy; defaults k1=1.2 b=0.75 avg_len=128, NLTK stop)")
        st.add_column("variant")
        for m in METRICS:
            st.add_column(m, justify="right")
        for name, m in sweep:
            st.add_row(name, *(f"{m[k]:.4f}" for k in METRICS))
        console.print(st)
    for n in notes:
        console.print(f"[red]{n}[/]")
    for k, v in timings.items():
        console.print(f"{k}: {v:.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "rows": [{"run": n, **m} for n, m, _ in rows],
                "sweep": [{"variant": n, **m} for n, m in sweep],
                "latency_ms": {
                    k: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}
                    for k, v in latencies.items()
                },
                "timings_s": timings,
                "notes": notes,
            },
            indent=1,
            default=lambda x: None if isinstance(x, float) and math.isnan(x) else x,
        )
    )
    console.print(f"written {args.json}")


if __name__ == "__main__":
    main()
