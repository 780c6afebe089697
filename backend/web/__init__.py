"""The backend's web page: plain HTML/CSS/JS, no build step and nothing fetched from elsewhere.

`mount_web(app)` serves `static/index.html` at `GET /` and the assets under `/static`. The page
talks to the JSON API with paths relative to its own URL, so it also works behind a path prefix.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_web(app: FastAPI) -> None:
    """Serve the page at `GET /` and its assets at `/static/*` (no auth: they hold no data)."""

    async def index() -> FileResponse:
        # no-cache: the browser revalidates (ETag) so a new deploy is picked up at once.
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
