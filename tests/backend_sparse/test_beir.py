"""Pure BEIR helpers of the quality harness, on a tiny hand-made dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.harness.beir import (
    BeirData,
    Doc,
    doc_scores_from_hits,
    evaluate,
    load_beir,
    percentile,
    ranking_from_scores,
    select_subset,
)


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    docs = [
        {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces fever."},
        {"_id": "d2", "title": "", "text": "Vitamin C and colds."},
        {"_id": "d3", "title": "Sleep", "text": "Sleep improves memory."},
        {"_id": "d4", "title": "Coffee", "text": "Coffee and heart rate."},
        {"_id": "d5", "title": "Exercise", "text": "Exercise lowers blood pressure."},
        {"_id": "d6", "text": "Untitled document."},
    ]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n\n")
    queries = [
        {"_id": "q1", "text": "does aspirin lower fever", "metadata": {}},
        {"_id": "q2", "text": "sleep and memory"},
        {"_id": "q3", "text": "coffee heart"},
        {"_id": "q9", "text": "a query without judgements"},
    ]
    (tmp_path / "queries-train.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    (tmp_path / "qrels-train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq2\td5\t1\nq3\td4\t1\n"
    )
    return tmp_path


def test_load_beir(beir_dir: Path) -> None:
    data = load_beir(beir_dir)
    assert list(data.corpus) == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert data.corpus["d1"].full_text == "Aspirin Aspirin reduces fever."
    assert data.corpus["d2"].full_text == "Vitamin C and colds."  # no title: no leading space
    assert data.corpus["d6"].title == ""
    assert list(data.queries) == ["q1", "q2", "q3"]  # q9 has no qrels: dropped
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d3": 1, "d5": 1}, "q3": {"d4": 1}}


def test_load_beir_qrels_subfolder_layout(beir_dir: Path) -> None:
    (beir_dir / "qrels").mkdir()
    (beir_dir / "qrels-train.tsv").rename(beir_dir / "qrels" / "test.tsv")
    (beir_dir / "queries-train.jsonl").rename(beir_dir / "queries.jsonl")
    data = load_beir(beir_dir, split="test")
    assert set(data.queries) == {"q1", "q2", "q3"}
    with pytest.raises(FileNotFoundError):
        load_beir(beir_dir, split="dev")


def test_subset_keeps_relevant_docs_plus_distractors(beir_dir: Path) -> None:
    data = load_beir(beir_dir)
    sub = select_subset(data, limit_queries=2, limit_docs=4)
    assert list(sub.queries) == ["q1", "q2"]
    assert {"d1", "d3", "d5"} <= set(sub.corpus)
    assert len(sub.corpus) == 4
    assert list(sub.corpus) == [d for d in data.corpus if d in sub.corpus]  # file order kept
    assert sub.qrels == {"q1": {"d1": 1}, "q2": {"d3": 1, "d5": 1}}
    # deterministic for a seed
    assert select_subset(data, 2, 4).corpus.keys() == sub.corpus.keys()


def test_subset_limits_and_edge_cases(beir_dir: Path) -> None:
    data = load_beir(beir_dir)
    # fewer docs than the judged set: the judged ones are all kept anyway
    sub = select_subset(data, limit_queries=3, limit_docs=2)
    assert set(sub.corpus) == {"d1", "d3", "d4", "d5"}
    assert set(sub.queries) == {"q1", "q2", "q3"}
    # no limits: everything
    full = select_subset(data)
    assert full.corpus.keys() == data.corpus.keys()
    assert full.queries == data.queries
    # more distractors asked than exist
    assert len(select_subset(data, 1, 100).corpus) == 6
    # a query whose relevant documents are all missing from the corpus is dropped
    data2 = BeirData(
        corpus={"d1": Doc("d1", "", "x")},
        queries={"q1": "x", "q2": "y"},
        qrels={"q1": {"d1": 1}, "q2": {"gone": 1}},
    )
    sub2 = select_subset(data2)
    assert list(sub2.queries) == ["q1"]
    assert sub2.qrels == {"q1": {"d1": 1}}


def test_doc_scores_best_chunk_first_occurrence() -> None:
    hits = [("d2", 0.9), ("d1", 0.8), ("d2", 0.95), (None, 0.7), ("d3", 0.1), ("d1", 0.05)]
    scores = doc_scores_from_hits(hits)
    assert list(scores) == ["d2", "d1", "d3"]
    ranked = sorted(scores, key=lambda d: -scores[d])
    assert ranked == ["d2", "d1", "d3"]  # engine order kept, later chunks ignored
    assert len(set(scores.values())) == 3  # strictly decreasing: no ties to reorder
    assert doc_scores_from_hits([]) == {}


def test_ranking_from_scores_ties_broken_by_id() -> None:
    r = ranking_from_scores({"b": 1.0, "a": 1.0, "c": 2.0}, k=2)
    assert list(r) == ["c", "a"]
    assert r["c"] > r["a"]


def test_evaluate_perfect_and_empty() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1, "d5": 1}}
    perfect = {"q1": {"d1": 2.0, "x": 1.0}, "q2": {"d3": 3.0, "d5": 2.0, "x": 1.0}}
    m = evaluate(qrels, perfect)
    assert m == pytest.approx({"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0})
    # a query with no results (missing or empty) counts as zero
    m = evaluate(qrels, {"q1": {"d1": 1.0}})
    assert m == pytest.approx({"ndcg@10": 0.5, "recall@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5})
    m = evaluate(qrels, {"q1": {"d1": 1.0}, "q2": {}})
    assert m["ndcg@10"] == pytest.approx(0.5)
    assert evaluate({}, {}) == {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}


def test_evaluate_known_values() -> None:
    qrels = {"q": {"r1": 1, "r2": 1}}
    # relevant at ranks 2 and 12: nDCG@10 = (1/log2(3)) / (1 + 1/log2(3))
    run = {"q": {f"n{i:02d}": 100.0 - i for i in range(15)}}
    del run["q"]["n01"], run["q"]["n11"]
    run["q"]["r1"] = 99.0
    run["q"]["r2"] = 89.0
    m = evaluate(qrels, run)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert m["recall@10"] == pytest.approx(0.5)
    assert m["recall@100"] == pytest.approx(1.0)
    assert m["mrr@10"] == pytest.approx(0.5)
    # relevance only beyond rank 10: MRR@10 is 0 (pytrec_eval's recip_rank would not be)
    late = {"q": {f"n{i:02d}": 100.0 - i for i in range(10)} | {"r1": 1.0}}
    assert evaluate({"q": {"r1": 1}}, late)["mrr@10"] == 0.0


def test_evaluate_from_chunk_hits(beir_dir: Path) -> None:
    """End to end through the helpers: chunk hits -> doc scores -> metrics."""
    data = load_beir(beir_dir)
    hits = {
        "q1": [("d1", 0.9), ("d1", 0.8), ("d2", 0.5)],
        "q2": [("d2", 0.9), ("d3", 0.8), ("d2", 0.7), ("d5", 0.6)],
        "q3": [],
    }
    run = {q: doc_scores_from_hits(h) for q, h in hits.items()}
    m = evaluate(data.qrels, run)
    ndcg_q2 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((1.0 + ndcg_q2 + 0.0) / 3)
    assert m["mrr@10"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert m["recall@10"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)


def test_percentile() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([5.0], 95) == 5.0
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)
    assert percentile([3, 1, 2], 100) == 3
