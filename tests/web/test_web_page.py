"""The web page in a real browser (Debian's Chromium driven by Playwright) against the real stack:
the ml-api with MiniLM and a real backend process (`uvicorn backend.app:app`).

One pass the way a person uses it: upload two files through the file input, watch them become
indexed, search, check the passage and its highlighting, delete, and look at it on a phone.
Screenshots go to test-artifacts/web-*.png.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from stack import free_port, stop_process

from backend.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (`make test` installs it)"
)

FACT = (
    "Every Tuesday at dawn the lighthouse keeper of Skerry Island rows out to feed the "
    "seventeen harbour cats with smoked herring."
)
LIGHTHOUSE = f"""Notes from the north coast

The island has one road, one shop and a lighthouse painted in red and white bands.

{FACT}

The keeper's logbook also records the weather, passing ships and the state of the lamp.
"""
# A second document: the query must pick the right one, and its markup must stay text.
BREAD = """Baking bread at home

Mix flour, water, salt and yeast, knead for ten minutes and let the dough rise for two hours.
<img src=x onerror="window.__xss = 1"> A hot oven and a tray of water give a crisp crust.
"""
# Long and without spaces: it must wrap, not widen the page on a phone.
BREAD_NAME = "baking-bread-at-home-with-flour-water-salt-and-yeast-notes-and-timings.txt"
QUESTION = "Who feeds the cats on Skerry Island?"
SCORE = re.compile(r"^-?\d+\.\d{4}$")
MILLIS = re.compile(r"^[\d.]+ ms$")


LONG_MARKER = "quetzalcoatlus"


def upload_long_text(url: str) -> str:
    """A document of many chunks with one rare word in the middle; returns its id once
    indexed."""
    topics = ["tides", "granite", "orchards", "railways", "glaciers", "violins", "comets"]
    paragraphs = [
        f"Paragraph {i} describes {topics[i % len(topics)]} in some detail, with notes on "
        f"history, measurement and the people who studied them over many long years."
        + (f" A fossil named {LONG_MARKER} was found here." if i == 30 else "")
        for i in range(60)
    ]
    resp = httpx.post(
        f"{url}/documents", json={"text": "\n\n".join(paragraphs), "title": "long.txt"}
    )
    assert resp.status_code == 202, resp.text
    doc_id = resp.json()["documents"][0]["id"]
    deadline = time.monotonic() + 90
    while (doc := httpx.get(f"{url}/documents/{doc_id}").json())["status"] != "indexed":
        assert doc["status"] != "failed" and time.monotonic() < deadline, doc
        time.sleep(0.2)
    assert doc["chunk_count"] >= 3, doc
    return doc_id


@pytest.fixture
def backend_url(ml_api_minilm: str, tmp_path: Path) -> Iterator[str]:
    """A real backend process on a free port, with its own DATA_DIR and embedded Qdrant."""
    port = free_port()
    data = tmp_path / "data"
    # The developer's shell must not leak backend settings (API_KEY, QDRANT_URL, ...) in.
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(ML_API_URL=ml_api_minilm, DATA_DIR=str(data), QDRANT_PATH=str(data / "qdrant"))
    log_path = tmp_path / "backend.log"
    cmd = [sys.executable, "-m", "uvicorn", "backend.app:app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,  # not ROOT: a developer's .env must not apply
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"backend exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"backend not ready after 60 s:\n{log_path.read_text()[-5000:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop_process(proc)


def test_web_page_upload_search_delete(backend_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    def backend_log() -> str:
        return (tmp_path / "backend.log").read_text(errors="replace")[-4000:]

    ARTIFACTS.mkdir(exist_ok=True)
    files = tmp_path / "files"
    files.mkdir()
    (files / "lighthouse.txt").write_text(LIGHTHOUSE)
    (files / BREAD_NAME).write_text(BREAD)

    errors: list[str] = []
    tolerated: list[str] = []  # browser-logged HTTP errors the test provokes on purpose

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)

            def on_console(msg: object) -> None:
                if msg.type == "error":  # type: ignore[attr-defined]
                    text = msg.text  # type: ignore[attr-defined]
                    (tolerated if "status of 422" in text else errors).append(text)

            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("dialog", lambda dialog: dialog.accept())

            index = httpx.get(f"{backend_url}/", timeout=10)
            assert index.status_code == 200 and "<title>ragstack</title>" in index.text, (
                "GET / is not the web page: backend.app.create_app must call "
                "backend.web.mount_web(app)"
            )
            page.goto(f"{backend_url}/")
            expect(page).to_have_title("ragstack")
            expect(page.locator("#docs-empty")).to_contain_text("No documents yet")
            # Every form control has a label.
            unlabelled = page.evaluate(
                """() => [...document.querySelectorAll('input, select')]
                    .filter((c) => !c.labels || c.labels.length === 0).map((c) => c.id)"""
            )
            assert unlabelled == []

            # -- upload two files at once; both become indexed, live ----------------------------
            page.set_input_files(
                "#file-input", [str(files / "lighthouse.txt"), str(files / BREAD_NAME)]
            )
            uploads = page.locator("#uploads > li")
            expect(uploads).to_have_count(2)
            rows = page.locator("#docs-body > tr")
            expect(rows).to_have_count(2, timeout=30_000)
            for name in ("lighthouse.txt", BREAD_NAME):
                row = rows.filter(has_text=name)
                badge = row.locator(".badge")
                expect(badge).to_have_text(re.compile(r"^(indexed|failed)$"), timeout=60_000)
                assert badge.inner_text() == "indexed", f"{row.inner_text()}\n{backend_log()}"
                expect(row.locator(".doc-chunks")).not_to_have_text("—")
            expect(uploads.filter(has_text="indexed")).to_have_count(2)

            # -- search: Enter in the box; the default request carries no "mode" --------------
            page.locator("#search-input").fill(QUESTION)
            with page.expect_request("**/query") as req_info:
                page.locator("#search-input").press("Enter")
            sent = req_info.value.post_data_json
            assert sent["query"] == QUESTION and "mode" not in sent and "rerank" in sent
            # One result per document by default, with how many of its passages matched.
            assert sent["group_by"] == "document" and "context" not in sent
            results = page.locator("#results > li.result")
            expect(results.first).to_be_visible()
            first = results.first
            expect(first.locator(".result-file")).to_have_text("lighthouse.txt")
            expect(first.locator(".result-matches")).to_have_text(re.compile(r"^\d+ matching"))
            names = results.locator(".result-file").all_inner_texts()
            assert len(names) == len(set(names)), names
            expect(first.locator(".result-text")).to_contain_text(FACT)
            marks = first.locator(".result-text mark").all_inner_texts()
            assert {"cats", "Skerry", "Island"} <= set(marks), marks
            expect(first.locator(".score-vector dd")).to_have_text(SCORE)
            summary = page.locator("#search-summary")
            expect(summary).to_contain_text("reranked")
            for stage in ("embed", "search", "total"):
                expect(summary.locator(f".timing-{stage} dd")).to_have_text(MILLIS)
            # Untrusted text stays text: the markup in the bread file created no element.
            expect(results.filter(has_text="crisp crust").locator("img")).to_have_count(0)
            assert page.evaluate("window.__xss") is None
            page.screenshot(path=str(ARTIFACTS / "web-desktop.png"), full_page=True)

            # -- an explicit mode is sent and shown ----------------------------------------------
            page.locator("#mode-select").select_option("dense")
            with page.expect_response("**/query") as resp_info:
                page.locator("#search-button").click()
            response = resp_info.value
            assert response.request.post_data_json["mode"] == "dense"
            assert response.status == 200
            assert response.json()["mode"] == "dense"
            expect(summary).to_contain_text("dense")
            expect(results.first.locator(".result-file")).to_have_text("lighthouse.txt")
            page.locator("#mode-select").select_option("")

            # -- context: the passages around a hit, around the hit itself ---------------------
            long_id = upload_long_text(backend_url)
            page.locator("#search-input").fill(LONG_MARKER)
            page.locator("#context-select").select_option("1")
            with page.expect_response("**/query") as resp_info:
                page.locator("#search-button").click()
            body = resp_info.value.json()
            assert resp_info.value.request.post_data_json["context"] == 1
            hit = next(r for r in body["results"] if r["document_id"] == long_id)
            assert hit["context_before"] or hit["context_after"], hit
            shown = results.filter(has_text=LONG_MARKER).first
            expect(shown.locator(".result-hit")).to_contain_text(LONG_MARKER)
            expect(shown.locator(".result-context").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "web-context.png"), full_page=True)
            page.locator("#context-select").select_option("0")
            httpx.delete(f"{backend_url}/documents/{long_id}", timeout=10)
            page.locator("#docs-refresh").click()
            expect(rows).to_have_count(2)

            # -- delete (confirm dialog accepted) -----------------------------------------------
            doc_id = rows.filter(has_text="lighthouse.txt").get_attribute("data-id")
            page.get_by_role("button", name="Delete lighthouse.txt").click()
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text(BREAD_NAME)
            assert httpx.get(f"{backend_url}/documents/{doc_id}", timeout=10).status_code == 404
            listed = httpx.get(f"{backend_url}/documents", timeout=10).json()["documents"]
            assert [d["filename"] for d in listed] == [BREAD_NAME]
            page.locator("#search-input").press("Enter")
            expect(results.first.locator(".result-file")).to_have_text(BREAD_NAME)

            # -- phone width: no horizontal overflow --------------------------------------------
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(200)
            widths = page.evaluate(
                "() => [document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert widths[0] <= widths[1], widths
            page.screenshot(path=str(ARTIFACTS / "web-phone.png"), full_page=True)
        finally:
            browser.close()

    assert errors == [], errors
    assert all("422" in t for t in tolerated), tolerated
