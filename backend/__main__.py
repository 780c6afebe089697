"""`python -m backend`: serve the backend with uvicorn on HOST:PORT.

One worker process: embedded Qdrant allows one process per folder, and the ingestion queue lives
in the process. Scale out with QDRANT_URL and a process manager instead.
"""

from __future__ import annotations

import uvicorn

from backend.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "backend.app:app",
        host=settings.host,
        port=settings.port,
        workers=1,
        access_log=False,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
