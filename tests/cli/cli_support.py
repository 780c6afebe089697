"""Helpers of the CLI tests: run `python -m ragctl.main` as a subprocess with a clean
environment. Imported by the test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The CLI's own settings: a developer's shell must not leak into the tests.
CLI_ENV = ("BACKEND_URL", "API_KEY")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLI_ENV}
    # A wide, colourless console so tables keep each cell on one line.
    env.update({"COLUMNS": "220", "NO_COLOR": "1", "TERM": "dumb"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def ragctl(
    *args: str, cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `ragctl ARGS` in `cwd` (no .env of the repository is read from there)."""
    return subprocess.run(
        [sys.executable, "-m", "ragctl.main", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
