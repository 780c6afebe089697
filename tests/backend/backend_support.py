"""Helpers of the backend tests: sample files in every format and a real backend process
(uvicorn) to talk HTTP to. Imported by the test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from stack import free_port, stop_process

from backend.settings import Settings

# Settings the backend reads from the environment: a developer's shell must not leak into tests.
BACKEND_ENV = [name.upper() for name in Settings.model_fields]


# -- sample documents --------------------------------------------------------------------------


def make_pdf(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def make_docx(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(paragraphs[0], level=1)
    for text in paragraphs[1:]:
        document.add_paragraph(text)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.cell(r, c).text = value
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def make_html(title: str, body: str) -> bytes:
    return (
        f"<!doctype html><html><head><title>{title}</title><style>p {{ color: red }}</style>"
        f"<script>var secret = 'scriptjunk';</script></head><body><nav>navjunk menu</nav>"
        f"<h1>{title}</h1><p>{body}</p></body></html>"
    ).encode()


# -- a real backend process --------------------------------------------------------------------


@dataclass
class Backend:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def stop(self) -> None:
        self.client.close()
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # Conveniences for the tests.
    def upload(self, *files: tuple[str, bytes], **form: str) -> httpx.Response:
        parts = [("files", (name, data)) for name, data in files]
        return self.client.post("/documents", files=parts, data=form or None)

    def wait(self, doc_id: str, timeout: float = 90) -> dict[str, Any]:
        """Poll until the document is indexed or failed."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.client.get(f"/documents/{doc_id}").json()
            if body.get("status") in ("indexed", "failed"):
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"document {doc_id} still {body} after {timeout}s")
            time.sleep(0.1)

    def ingest(self, name: str, data: bytes, **form: str) -> dict[str, Any]:
        resp = self.upload((name, data), **form)
        assert resp.status_code == 202, resp.text
        return self.wait(resp.json()["documents"][0]["id"])

    def query(self, query: str, **body: Any) -> httpx.Response:
        return self.client.post("/query", json={"query": query, **body})


StartBackend = Callable[..., Backend]


def launch_backend(data_dir: Path, log_path: Path, **env: str) -> Backend:
    """Start `uvicorn backend.app:app` on a free port with DATA_DIR=data_dir; waits for /health."""
    port = free_port()
    # QDRANT_URL stays: set, it runs these tests against a Qdrant server.
    inherited = {k: v for k, v in os.environ.items() if k not in BACKEND_ENV or k == "QDRANT_URL"}
    full_env = {
        **inherited,
        "DATA_DIR": str(data_dir),
        "ML_API_RETRIES": "2",
        "ML_API_BACKOFF_S": "0.2",
        "LOG_LEVEL": "INFO",
        **{k.upper(): v for k, v in env.items()},
    }
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "backend.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            cwd=log_path.parent,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    backend = Backend(f"http://127.0.0.1:{port}", proc, log_path, data_dir, full_env)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"backend exited with {proc.returncode}:\n{backend.log()}")
        try:
            if httpx.get(f"{backend.url}/health", timeout=10).status_code == 200:
                return backend
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            backend.stop()
            raise TimeoutError(f"backend not ready:\n{backend.log()}")
        time.sleep(0.2)
