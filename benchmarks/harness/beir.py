"""Pure helpers for BEIR-format retrieval evaluation: loading a dataset folder, choosing a subset,
aggregating chunk hits to documents, and computing metrics with pytrec_eval.

A BEIR folder holds `corpus.jsonl` ({"_id", "title", "text"}), `queries*.jsonl` ({"_id", "text"})
and `qrels*.tsv` (`query-id<TAB>corpus-id<TAB>score`, optional header line). Nothing here talks
to the network, so tests can use it on a hand-made folder.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytrec_eval

# Where the benchmarks find BEIR SciFact unless told otherwise (never copied into the repo).
DEFAULT_DATA = Path("/work/shared/eval/scifact")
# Metric names as reported, and the pytrec_eval measures they come from.
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
_TREC_MEASURES = {"ndcg_cut.10", "recall.10", "recall.100"}


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """What gets indexed: `title + " " + text` (just the text when there is no title)."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass
class BeirData:
    corpus: dict[str, Doc]  # id -> document, in file order
    queries: dict[str, str]  # id -> text, only queries that have relevance judgements
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _pick(folder: Path, split: str, stem: str, suffix: str) -> Path:
    """`queries-train.jsonl` / `qrels/train.tsv` / `qrels-train.tsv` / `queries.jsonl`."""
    for candidate in (
        folder / f"{stem}-{split}{suffix}",
        folder / stem / f"{split}{suffix}",
        folder / f"{stem}{suffix}",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {stem} file for split {split!r} in {folder}")


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3:
                continue
            qid, did, score = row[0].strip(), row[1].strip(), row[2].strip()
            try:
                rel = int(score)
            except ValueError:  # the header line ("query-id corpus-id score")
                continue
            qrels.setdefault(qid, {})[did] = rel
    return qrels


def load_beir(folder: str | Path, split: str = "train") -> BeirData:
    """Load a BEIR folder. Queries without judgements are dropped (they cannot be scored)."""
    folder = Path(folder)
    corpus: dict[str, Doc] = {}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                did = str(row["_id"])
                corpus[did] = Doc(did, row.get("title") or "", row.get("text") or "")
    qrels = load_qrels(_pick(folder, split, "qrels", ".tsv"))
    queries: dict[str, str] = {}
    with _pick(folder, split, "queries", ".jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                qid = str(row["_id"])
                if qid in qrels:
                    queries[qid] = row["text"]
    qrels = {q: rels for q, rels in qrels.items() if q in queries}
    return BeirData(corpus, queries, qrels)


def select_subset(
    data: BeirData,
    limit_queries: int | None = None,
    limit_docs: int | None = None,
    seed: int = 0,
) -> BeirData:
    """A smaller, still meaningful evaluation set.

    Keeps the first `limit_queries` queries (file order). The corpus keeps every document judged
    for those queries (so each kept query can still be answered), then is filled up to `limit_docs`
    with distractors drawn at random (fixed `seed`) from the rest. If the judged documents alone
    exceed `limit_docs`, all of them are kept anyway. Qrels pointing outside the kept corpus are
    dropped; queries left without any relevant document are dropped too.
    """
    qids = list(data.queries)
    if limit_queries is not None:
        qids = qids[:limit_queries]
    judged: list[str] = []
    seen: set[str] = set()
    for q in qids:
        for did in data.qrels.get(q, {}):
            if did in data.corpus and did not in seen:
                seen.add(did)
                judged.append(did)
    if limit_docs is None:
        keep = set(data.corpus)
    else:
        rest = [d for d in data.corpus if d not in seen]
        n_extra = max(0, limit_docs - len(judged))
        extra = random.Random(seed).sample(rest, min(n_extra, len(rest)))
        keep = seen | set(extra)
    corpus = {d: doc for d, doc in data.corpus.items() if d in keep}
    qrels: dict[str, dict[str, int]] = {}
    for q in qids:
        rels = {d: r for d, r in data.qrels.get(q, {}).items() if d in corpus}
        if any(r > 0 for r in rels.values()):
            qrels[q] = rels
    queries = {q: data.queries[q] for q in qids if q in qrels}
    return BeirData(corpus, queries, qrels)


def doc_scores_from_hits(hits: Iterable[tuple[str | None, float]]) -> dict[str, float]:
    """Chunk hits (best first) -> document scores, a document scored by its best chunk.

    The first occurrence of a document wins (hits are assumed ranked best first, whatever the
    score scale); hits without a document id are skipped. Scores returned are strictly
    decreasing with rank (rank-derived), so pytrec_eval's tie-breaking on ids can never reorder
    documents the engine ranked.
    """
    ranked: list[str] = []
    seen: set[str] = set()
    for did, _score in hits:
        if did is None or did in seen:
            continue
        seen.add(did)
        ranked.append(did)
    n = len(ranked)
    return {did: float(n - i) for i, did in enumerate(ranked)}


def ranking_from_scores(scores: Mapping[str, float], k: int | None = None) -> dict[str, float]:
    """Keep the top `k` of a {doc: score} map, re-scored by rank (ties broken by id)."""
    order = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    if k is not None:
        order = order[:k]
    return doc_scores_from_hits(order)


def _mrr_at_10(qrel: Mapping[str, int], run: Mapping[str, float]) -> float:
    order = sorted(run.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    for rank, (did, _s) in enumerate(order, start=1):
        if qrel.get(did, 0) > 0:
            return 1.0 / rank
    return 0.0


def evaluate(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Mean nDCG@10, Recall@10, Recall@100 and MRR@10 over every judged query.

    Queries present in `qrels` but missing from `run` (or with an empty result) count as 0, as in
    BEIR. nDCG and recall come from pytrec_eval (`ndcg_cut.10`, `recall.10`, `recall.100`); MRR@10
    is computed here (pytrec_eval's `recip_rank` has no cut-off).
    """
    qrels_i = {q: {d: int(r) for d, r in rels.items()} for q, rels in qrels.items()}
    if not qrels_i:
        return dict.fromkeys(METRICS, 0.0)
    run_f = {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in qrels_i}
    # pytrec_eval skips queries with an empty run; they must still count as zeros.
    scored = {q: r for q, r in run_f.items() if r}
    per_query = pytrec_eval.RelevanceEvaluator(qrels_i, _TREC_MEASURES).evaluate(scored)
    totals = dict.fromkeys(METRICS, 0.0)
    for q in qrels_i:
        m = per_query.get(q)
        if m is not None:
            totals["ndcg@10"] += m["ndcg_cut_10"]
            totals["recall@10"] += m["recall_10"]
            totals["recall@100"] += m["recall_100"]
        totals["mrr@10"] += _mrr_at_10(qrels_i[q], run_f[q])
    n = len(qrels_i)
    return {k: v / n for k, v in totals.items()}


def percentile(values: Sequence[float], p: float) -> float:
    """Linearly interpolated percentile (`p` in 0..100, like numpy's default); NaN if empty."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * min(max(p, 0.0), 100.0) / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
