"""Smoke test of the soak benchmark (benchmarks/soak.py): a 20-second run with 16 clients, on
the session's tiny models and a small generated corpus, with the ml-api and the backend the
script starts itself. The real figures come from the full run (docs/benchmarks.md); this
checks the harness end to end and that a healthy stack meets the correctness targets. Memory
growth over 20 s is start-up noise, so only its measurement is checked, not its verdict."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from stack import ROOT, TINY_EMBEDDER, TINY_RERANKER

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "po", "qua", "bri", "don", "fel")
WORDS = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in ("n", "r", "s", "")]  # 784


def make_corpus(folder: Path, docs: int = 300, queries: int = 60) -> Path:
    """A BEIR-style folder: documents of random words (each ~2 chunks for the tiny embedder)
    with distinct titles, and queries drawn from the same words."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as fh:
        for i in range(docs):
            title = " ".join(rng.sample(WORDS, 5)) + f" {i}"
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 200))) + "."
            fh.write(json.dumps({"_id": str(i), "title": title, "text": text}) + "\n")
    with (folder / "queries-train.jsonl").open("w") as fh:
        for i in range(queries):
            fh.write(json.dumps({"_id": f"q{i}", "text": " ".join(rng.sample(WORDS, 4))}) + "\n")
    return folder


def test_soak_smoke(model_store: Path, tmp_path: Path) -> None:
    data = make_corpus(tmp_path / "corpus")
    out, md = tmp_path / "soak.json", tmp_path / "soak.md"
    cmd = [
        sys.executable,
        "benchmarks/soak.py",
        "--duration", "20",
        "--clients", "16",
        "--warmup", "5",
        "--max-live", "64",
        "--sanity", "10",
        "--store", str(model_store),
        "--embedder", TINY_EMBEDDER,
        "--reranker", TINY_RERANKER,
        "--data", str(data),
        "--json", str(out),
        "--logs", str(tmp_path / "logs"),
        "--append", str(md),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    # 1 = a target missed (memory growth over 20 s may be); 2 = the run itself failed.
    assert proc.returncode in (0, 1), proc.stdout[-5000:] + proc.stderr[-5000:]
    raw = json.loads(out.read_text())
    totals = raw["totals"]
    context = json.dumps(
        {k: raw[k] for k in ("totals", "lost", "resurrected", "error_samples", "notes")}, indent=1
    )[:5000]

    assert totals["server_errors"] == 0, context
    assert totals["other_errors"] == 0, context
    assert totals["lost"] == 0, context
    assert totals["deleted_not_gone"] == 0, context
    assert totals["points"] == totals["indexed_chunks"], context
    # The prefill (64) plus uploads under load; the clients delete to stay at the cap.
    assert totals["accepted"] > 64 and totals["deleted"] > 0, context
    assert totals["sanity_found"] >= 8, context
    kinds = raw["kinds"]
    for prefix in ("query", "upload", "status", "list", "delete"):
        assert any(k.startswith(prefix) and v["answers"] for k, v in kinds.items()), kinds
    assert any(k.endswith("+rerank") for k in kinds), kinds  # the tiny reranker is used
    for service in ("ml-api", "backend"):
        rss = raw["rss"][service]
        assert rss["baseline"] and rss["end"] and rss["growth_pct"] is not None, raw["rss"]

    # The report: rich tables on stdout, the same tables in the appended Markdown.
    for title in ("Targets", "Requests", "Documents", "Memory (RSS, MB)", "Timeline"):
        assert title in proc.stdout
        assert f"### {title}" in md.read_text()
    text = md.read_text()
    assert text.startswith("## Soak: 16 clients")
    assert "| 5xx answers | 0 of " in text and "| lost documents" in text
    assert (tmp_path / "logs" / "backend.log").is_file()
