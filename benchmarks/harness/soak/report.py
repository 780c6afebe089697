"""The soak's report: where it ran, RSS growth, the tables and targets, Markdown for
docs/benchmarks.md."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import subprocess
from collections import Counter
from typing import Any

from rich.markup import escape
from rich.table import Table

from benchmarks.harness.machine import machine_summary
from benchmarks.harness.report import Section, f0, f1, pct, section_markdown
from benchmarks.harness.soak.bookkeeping import KindStats, median
from benchmarks.harness.soak.common import (
    ROOT,
    THREAD_ENV,
    console,
)
from benchmarks.harness.soak.verify import SoakVerify

# -- machine -----------------------------------------------------------------------------------


def versions() -> str:
    import importlib.metadata as md

    out = []
    for name in (
        "bentoml",
        "onnxruntime-gpu",
        "onnxruntime",
        "fastapi",
        "uvicorn",
        "qdrant-client",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out.append(f"{name} {md.version(name)}")
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return ", ".join(out) + (f"; commit {commit}" if commit else "")


class Soak(SoakVerify):
    """The whole soak: load, verification and report."""

    # -- report ----------------------------------------------------------------------------

    def rss_summary(self) -> dict[str, dict[str, float | None]]:
        a = self.args
        load = [s for s in self.samples if s.t <= self.load_seconds]
        win = max(min(15.0, a.warmup / 2, (self.load_seconds - a.warmup) / 2), a.sample_every)
        out: dict[str, dict[str, float | None]] = {}
        for svc in self.services:

            def vals(lo: float, hi: float, name: str = svc.name) -> list[float]:
                return [v for s in load if lo <= s.t <= hi and (v := s.rss.get(name)) is not None]

            base = median(vals(a.warmup - win, a.warmup))
            end = median(vals(self.load_seconds - win, self.load_seconds))
            after = [
                (s.t, v) for s in load if s.t > a.warmup and (v := s.rss.get(svc.name)) is not None
            ]
            peak = max((v for _, v in after), default=None)
            slope = None
            if len(after) >= 3:
                ts, vs = [t for t, _ in after], [v for _, v in after]
                mt, mv = sum(ts) / len(ts), sum(vs) / len(vs)
                den = sum((t - mt) ** 2 for t in ts)
                if den > 0:
                    slope = 60 * sum((t - mt) * (v - mv) for t, v in after) / den
            rest = self.samples[-1].rss.get(svc.name) if self.samples else None
            growth = (end - base) / base * 100 if base and end is not None else None
            peak_growth = (peak - base) / base * 100 if base and peak is not None else None
            out[svc.name] = {
                "start": next((v for s in load if (v := s.rss.get(svc.name)) is not None), None),
                "baseline": base,
                "peak": peak,
                "end": end,
                "rest": rest,
                "growth_pct": growth,
                "peak_growth_pct": peak_growth,
                "slope_mb_per_min": slope,
            }
        return out

    def report(
        self, started: dt.datetime, load_start: str, load_end: str, command: str
    ) -> tuple[list[str], list[Section], dict[str, Any], bool]:
        a = self.args
        secs = max(self.load_seconds, 1e-9)
        sections: list[Section] = []

        # Requests by kind.
        def row(name: str, sts: list[KindStats]) -> list[str]:
            lat = [x for s in sts for x in s.latencies]
            n = len(lat)
            return [
                name,
                str(n),
                f1(n / secs),
                f0(pct(lat, 50)),
                f0(pct(lat, 95)),
                f0(pct(lat, 99)),
                f0(max(lat) if lat else None),
                str(sum(s.r429 for s in sts)),
                str(sum(s.r503 for s in sts)),
                str(sum(s.server_errors for s in sts)),
                str(sum(s.unexpected for s in sts)),
                str(sum(s.transport for s in sts)),
                str(sum(s.abandoned for s in sts)),
            ]

        rows = [row(k, [self.stats[k]]) for k in sorted(self.stats)]
        groups = {
            "all queries": [s for k, s in self.stats.items() if k.startswith("query")],
            "all uploads": [s for k, s in self.stats.items() if k.startswith("upload")],
            "all requests": list(self.stats.values()),
        }
        rows += [row(k, v) for k, v in groups.items() if v]
        sections.append(
            Section(
                "Requests",
                [
                    "kind",
                    "answers",
                    "per s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "429",
                    "503+RA",
                    "5xx",
                    "unexpected",
                    "transport",
                    "abandoned",
                ],
                rows,
                [
                    "Latency: client-side, of the final answer (a 429 or 503 with Retry-After is "
                    "waited out and retried: counted in its column, not in the latency). 5xx: "
                    "server errors except 503 with Retry-After. unexpected: another status than "
                    "the expected one (200, 202, 204). transport: connection errors and "
                    f"timeouts (--timeout {a.timeout:.0f} s). abandoned: a Retry-After wait "
                    "would have ended after the deadline.",
                ],
            )
        )

        # Documents.
        fmts = Counter(d.fmt for d in self.docs.values())
        ing = self.ingest_seconds
        rows = [
            [
                "uploads accepted (202)",
                str(len(self.docs)),
                ", ".join(f"{k} {v}" for k, v in sorted(fmts.items())),
            ],
            [
                "deleted by the clients (204)",
                str(self.n_deleted),
                f"their chunks: {'-' if self.orphan_hits is None else self.orphan_hits} found by "
                f"a filtered query; {len(self.resurrected)} still listed or not 404",
            ],
            [
                "expected live at the end",
                str(self.n_expected),
                ", ".join(f"{k} {v}" for k, v in sorted(self.final_statuses.items())),
            ],
            ["lost", str(len(self.lost)), "; ".join(f"{i}: {w}" for i, w in self.lost[:5])],
            [
                "listed with this run's tag",
                str(self.listed_ours),
                f"{len(self.unexpected_listed)} not expected; {self.listed_total} documents in all",
            ],
            [
                "Qdrant points / chunks of indexed documents",
                f"{self.points} / {self.indexed_chunks}",
                "equal" if self.points == self.indexed_chunks else "DIFFERENT",
            ],
            [
                "upload -> indexed (server clock; load uploads)",
                f"p50 {f1(pct(ing, 50))} s",
                f"p95 {f1(pct(ing, 95))} s, max {f1(max(ing) if ing else None)} s",
            ],
            [
                "prefilled before the load (JSON, not in the request figures)",
                str(sum(d.prefill for d in self.docs.values())),
                f"{self.prefill_seconds:.0f} s; {self.prefill_stats.r429} 429, "
                f"{self.prefill_stats.r503} 503+RA, {self.prefill_stats.errors} errors",
            ],
            ["drain after the load", f"{self.drain_seconds:.0f} s", self.drain_stalled],
            [
                "not verifiable (backend not answering)",
                str(len(self.unverified)),
                self.unresponsive[:200],
            ],
            [
                "retrieval sanity: own title in top 10",
                f"{self.sanity_found}/{self.sanity_n}",
                "; ".join(self.sanity_misses[:3]),
            ],
        ]
        if self.duplicates:
            rows.append(["uploads answered as duplicates", str(self.duplicates), "unexpected"])
        sections.append(Section("Documents", ["what", "count", "detail"], rows))

        # Memory.
        rss = self.rss_summary()
        # Memory of a stuck service is memory at rest: no verdict on it.
        gap, gap_at = self.longest_gap()
        stuck = gap > max(30.0, 0.1 * a.duration) and gap_at + gap > a.warmup
        rows = []
        for name, r in rss.items():
            rows.append(
                [
                    name,
                    f0(r["start"]),
                    f0(r["baseline"]),
                    f0(r["peak"]),
                    f0(r["end"]),
                    "-" if r["growth_pct"] is None else f"{r['growth_pct']:+.1f}%",
                    "-" if r["peak_growth_pct"] is None else f"{r['peak_growth_pct']:+.1f}%",
                    "-" if r["slope_mb_per_min"] is None else f"{r['slope_mb_per_min']:+.1f}",
                    f0(r["rest"]),
                ]
            )
        sections.append(
            Section(
                "Memory (RSS, MB)",
                [
                    "service",
                    "at start",
                    "end of warm-up",
                    "peak after",
                    "end of load",
                    "growth",
                    "peak growth",
                    "MB/min",
                    "after drain",
                ],
                rows,
                [
                    "RSS summed over the service's process tree (bentoml workers included; the "
                    "backend's per-document parser processes left out). end of warm-up / end of "
                    "load: medians of the samples of the last 15 s (at most half the phase) of "
                    f"each; growth = their difference over the former; warm-up = first "
                    f"{a.warmup:.0f} s; samples every {a.sample_every:.0f} s; MB/min: "
                    "least-squares slope after warm-up.",
                ],
            )
        )

        # Timeline.
        rows = []
        step = a.interval
        t = 0.0
        end = self.load_seconds + 1e-6
        while t < end - 0.5:
            # A short tail joins the last row.
            hi = end if t + 1.5 * step >= end else t + step
            ev = [e for e in self.events if t <= e[0] < hi]
            q = [ms for (_, k, _, ms) in ev if k.startswith("query")]
            up = sum(1 for (_, k, s, _) in ev if k.startswith("upload") and s == 202)
            bad = sum(1 for (_, _, s, _) in ev if s >= 500)
            smp = [s for s in self.samples if t <= s.t < hi and s.t <= self.load_seconds]
            last = smp[-1] if smp else None
            cells = [
                f"{t:.0f}-{min(hi, self.load_seconds):.0f}",
                str(len(ev)),
                f1(len(ev) / max(hi - t, 1e-9)),
                f0(pct(q, 50)),
                f0(pct(q, 95)),
                str(up),
                str(bad),
            ]
            for svc in self.services:
                cells.append(f0(median([v for s in smp if (v := s.rss.get(svc.name)) is not None])))
            cells += [
                "-" if last is None or last.pending is None else str(last.pending),
                "-" if last is None or last.points is None else str(last.points),
            ]
            rows.append(cells)
            t = hi
        cap = (
            f"the live-document cap ({self.cap} per client, {self.cap * a.clients} in all) was "
            + (
                f"reached at {self.cap_reached_at:.0f} s"
                if self.cap_reached_at is not None
                else "never reached"
            )
        )
        sections.append(
            Section(
                "Timeline",
                [
                    "seconds",
                    "answers",
                    "per s",
                    "query p50 ms",
                    "query p95 ms",
                    "uploads",
                    "5xx",
                    *(f"{s.name} RSS MB" for s in self.services),
                    "ingest pending",
                    "points",
                ],
                rows,
                [
                    f"Answers by the second they arrived; RSS: median in the interval; {cap}. "
                    "ingest pending, points: the backend's /health at the end of the interval "
                    "('-': no answer, or Qdrant not counted within /health's own 5 s limit)."
                ],
            )
        )

        # Targets.
        every = [*self.stats.values(), self.prefill_stats]  # the prefill's answers count too
        n_all = sum(len(s.latencies) for s in every)
        s5 = sum(s.server_errors for s in every)
        r503 = sum(s.r503 for s in every)
        other = sum(s.unexpected + s.transport for s in every)
        lost, unverified = len(self.lost), len(self.unverified)
        orphans_checked = self.orphan_hits is not None and not (
            self.unresponsive and self.n_deleted
        )
        gone_bad = len(self.resurrected) + (self.orphan_hits or 0)
        extra = len(self.unexpected_listed)

        def target(name: str, measured: str, need: str, ok: bool | None) -> list[str]:
            return [name, measured, need, "-" if ok is None else ("PASS" if ok else "MISS")]

        own_stack = all(s.proc is not None for s in self.services) and len(self.services) == 2
        rows = [
            target(
                "5xx answers",
                f"{s5} of {n_all} (+{r503} 503 with Retry-After, retried)",
                "0",
                s5 == 0,
            ),
            target(
                "other errors (transport, timeouts, unexpected status)", str(other), "0", other == 0
            ),
            target(
                "lost documents (accepted, not deleted, not indexed with all chunks)",
                f"{lost} of {len(self.docs)} accepted"
                + (f", {unverified} could not be checked" if unverified else ""),
                "0",
                lost == 0 and unverified == 0,
            ),
            target(
                "deleted documents gone (registry, listing, chunks)",
                f"{gone_bad} left"
                if gone_bad
                else f"all {self.n_deleted} gone"
                if orphans_checked
                else "not checked: backend not answering",
                "0 left",
                gone_bad == 0 if orphans_checked or gone_bad else None,
            ),
            target(
                "listing = the clients' documents (this run's tag)",
                f"{self.listed_ours} listed, {self.n_expected} expected, {extra} not expected",
                "equal",
                self.listed_ours == self.n_expected and extra == 0,
            ),
            target(
                "Qdrant points = chunks of indexed documents",
                f"{self.points} / {self.indexed_chunks}",
                "equal",
                self.points == self.indexed_chunks if own_stack else None,
            ),
        ]
        for name, r in rss.items():
            g = r["growth_pct"]
            rows.append(
                target(
                    f"RSS growth after warm-up: {name}",
                    "not measured"
                    if g is None
                    else f"{g:+.1f}% ({f0(r['baseline'])} -> {f0(r['end'])} MB)"
                    + (f"; not under load: no query answered for {gap:.0f} s" if stuck else ""),
                    f"< {a.rss_limit:g}%",
                    None if g is None or stuck else g < a.rss_limit,
                )
            )
        if not rss:
            rows.append(target("RSS growth after warm-up", "not measured (no pids)", "-", None))
        rows.append(
            target(
                "retrieval sanity (own title in top 10)",
                f"{self.sanity_found}/{self.sanity_n}",
                f">= {a.sanity_min:g}%",
                None
                if not self.sanity_n
                else 100 * self.sanity_found / self.sanity_n >= a.sanity_min,
            )
        )
        sections.insert(0, Section("Targets", ["target", "measured", "needed", "result"], rows))
        passed = all(r[3] != "MISS" for r in rows)

        ml = self.health.get("ml_api") or {}

        def tag(m: Any) -> str:
            return str(m.get("tag") or m.get("name")) if isinstance(m, dict) else str(m)

        when = started.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        stack = (
            "own (started by the script: ml-api + backend, embedded Qdrant, fresh DATA_DIR, "
            "default limits)"
            if own_stack
            else f"given: backend {a.url or 'own'}, ml-api {a.ml_api or 'own'}"
        )
        header = [
            f"date: {when}",
            f"machine: {machine_summary()}",
            f"load average (1/5/15 min): {load_start} at start, {load_end} at end",
            f"command: `{command}`",
            f"versions: {versions()}",
            f"stack: {stack}; embedder {tag(ml.get('embedder'))}, reranker "
            f"{tag(ml.get('reranker'))}",
            f"load: {a.clients} closed-loop clients for {a.duration:.0f} s (the last request "
            f"ended at {self.load_seconds:.0f} s; warm-up {a.warmup:.0f} s), think time "
            f"{a.think:g} s; mix "
            + ", ".join(f"{k} {v:g}" for k, v in a.mix.items())
            + "; upload formats "
            + ", ".join(f"{k} {v:g}" for k, v in a.formats.items())
            + "; query modes "
            + ", ".join(f"{k} {v:g}" for k, v in a.modes.items())
            + f", {a.rerank_share:.0%} asking for rerank"
            + ("" if self.reranker else " (no reranker: none reranked)")
            + f"; top_k 10; at most {self.cap * a.clients} live documents",
            f"data: {a.data} ({len(self.corpus)} documents, {len(self.queries)} queries)",
        ]
        env = [f"{k}={os.environ[k]}" for k in THREAD_ENV if k in os.environ]
        if env:
            header.append("environment (inherited by the services): " + " ".join(env))
        if self.not_reranked:
            header.append(f"{self.not_reranked} queries asked for rerank and were not reranked")
        notes = [
            f"longest time without an answered query during the load: {gap:.1f} s (from "
            f"{gap_at:.0f} s)" + (": the backend was stuck" if stuck else "")
        ]
        if self.unresponsive:
            notes.append(f"verification: the backend stopped answering: {self.unresponsive}")
            notes.append(f"final /health: {json.dumps(self.final_health)[:600] or 'no answer'}")
        notes += self.log_notes()
        notes += [f"{name} EXITED during the load (see its log)" for name in sorted(self.died)]
        if self.error_samples:
            notes.append(
                "first errors: "
                + " | ".join(
                    f"{e['t']}s {e['request']} -> {e['status']}: {e['detail'][:200]}"
                    for e in self.error_samples[:5]
                )
            )
        raw = {
            "started": started.isoformat(),
            "command": command,
            "header": header,
            "notes": notes,
            "passed": passed,
            "run_id": self.run_id,
            "load_seconds": self.load_seconds,
            "totals": {
                "answers": n_all,
                "server_errors": s5,
                "r503_retry_after": r503,
                "r429": sum(s.r429 for s in every),
                "other_errors": other,
                "accepted": len(self.docs),
                "deleted": self.n_deleted,
                "expected": self.n_expected,
                "lost": lost,
                "unverified": unverified,
                "deleted_not_gone": gone_bad,
                "unexpected_listed": extra,
                "points": self.points,
                "indexed_chunks": self.indexed_chunks,
                "sanity_found": self.sanity_found,
                "sanity_n": self.sanity_n,
            },
            "kinds": {
                k: {
                    "answers": len(s.latencies),
                    "p50_ms": pct(s.latencies, 50),
                    "p95_ms": pct(s.latencies, 95),
                    "p99_ms": pct(s.latencies, 99),
                    "statuses": dict(s.statuses),
                    "r429": s.r429,
                    "r503": s.r503,
                    "server_errors": s.server_errors,
                    "unexpected": s.unexpected,
                    "transport": s.transport,
                    "abandoned": s.abandoned,
                }
                for k, s in self.stats.items()
            },
            "rss": rss,
            "lost": self.lost,
            "unverified": self.unverified,
            "resurrected": self.resurrected,
            "error_samples": self.error_samples,
            "samples": [s.__dict__ for s in self.samples],
            "sections": [s.__dict__ for s in sections],
        }
        return header + notes, sections, raw, passed

    def longest_gap(self) -> tuple[float, float]:
        """(longest stretch of the load without an answered query, its start): a stuck backend
        shows here even when its requests end as timeouts (queries are most of the load and need
        every part of the stack; a listing can still answer from the registry alone)."""
        answered = (e[0] for e in self.events if e[1].startswith("query") and e[2] == 200)
        times = sorted([0.0, *answered, self.load_seconds])
        best = (0.0, 0.0)
        for a, b in itertools.pairwise(times):
            best = max(best, (b - a, a))
        return best

    def log_notes(self) -> list[str]:
        """What the services' logs say about trouble (own stack only)."""
        notes = []
        for svc in self.services:
            if svc.log is None or not svc.log.exists():
                continue
            lines = svc.log.read_text(errors="replace").splitlines()
            bad = [ln for ln in lines if "Traceback" in ln or " ERROR" in ln or "error" in ln[:40]]
            failed = [ln for ln in lines if "ingestion failed" in ln]
            # A document deleted while it is ingested ends that way too ("interrupted"): fine.
            deleted = {i for i, d in self.docs.items() if d.state == "deleted"}
            other = [ln for ln in failed if not any(f"id={i} " in ln for i in deleted)]
            notes.append(
                f"{svc.name} log ({svc.log.name}): {len(lines)} lines, {len(bad)} error or "
                f"traceback lines, {len(failed)} 'ingestion failed' ({len(failed) - len(other)} "
                "of them documents deleted while ingesting)"
                + (f"; first error: {bad[0][:300]}" if bad else "")
                + (f"; first other failure: {other[0][:300]}" if other else "")
            )
        return notes


# -- output ------------------------------------------------------------------------------------


def print_report(header: list[str], sections: list[Section]) -> None:
    for line in header:
        console.print(line, highlight=False, markup=False)
    for s in sections:
        table = Table(title=s.title, title_justify="left")
        for i, col in enumerate(s.columns):
            numeric = i > 0 and all(_numeric(row[i]) for row in s.rows)
            table.add_column(col, justify="right" if numeric else "left")
        for row in s.rows:
            table.add_row(
                *(
                    f"[green]{c}[/green]"
                    if c == "PASS"
                    else f"[red]{c}[/red]"
                    if c == "MISS"
                    else escape(c)
                    for c in row
                )
            )
        console.print(table)
        for n in s.notes:
            console.print(f"  {n}", style="dim", highlight=False, markup=False)


def _numeric(cell: str) -> bool:
    """A figure ("1,234", "+3.5%", "-", "12 / 14"): right-aligned in tables."""
    core = cell.replace(",", "").replace("%", "").replace("/", "").replace(" ", "")
    core = core.lstrip("+-")
    return core == "" or core.replace(".", "", 1).isdigit()


def markdown(title: str, header: list[str], sections: list[Section]) -> str:
    lines = [title, ""]
    lines += [f"- {h}" for h in header]
    for s in sections:
        numeric = [all(_numeric(row[i]) for row in s.rows) and i > 0 for i in range(len(s.columns))]
        lines += section_markdown(s, ["---:" if n else "---" for n in numeric])
    return "\n".join(lines) + "\n"
