"""Run the parsers in a separate process with a time and a memory limit.

A hostile or pathological file (a PDF that sends PDFium into a loop, a DOCX whose XML needs
gigabytes, a crash in C code) must cost one document, not the server. Each parse, and each
upload-time check that opens a file with a native library, runs in a fresh
`python -m backend.ingest.isolate` process: it caps its own address space (RLIMIT_AS) and CPU
time, dies with the server (PR_SET_PDEATHSIG), and answers one JSON line on stdout (JSON, not
pickle: the child handles untrusted bytes, so its output is untrusted too). The parent kills it
when the time limit passes or the caller is cancelled (a document deleted mid-parse, shutdown).

A fresh interpreter per job costs ~0.1-0.3 s, little next to embedding, and needs no fork of the
threaded server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.ingest.parse import InvalidDocument, Page, UnsupportedType

if TYPE_CHECKING:
    from backend.settings import Settings

log = logging.getLogger("ragstack.backend.ingest")

MiB = 1024 * 1024
# Room for JSON framing on top of the text itself (at most 4 UTF-8 bytes per character).
OUTPUT_SLACK_BYTES = 1 * MiB
STDERR_KEEP_BYTES = 4096


class ParserUnavailable(Exception):
    """No parser process could be started (the server is out of processes or memory)."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    max_pdf_pages: int
    max_chars: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            timeout_s=settings.parse_timeout_s,
            memory_mb=settings.parse_memory_mb,
            max_pdf_pages=settings.max_pdf_pages,
            max_chars=settings.max_extracted_chars,
        )


async def precheck(kind: str, data: bytes, limits: Limits) -> int | None:
    """`parse.precheck` of in-memory bytes in a parser process. Returns the page count when
    known; raises InvalidDocument / UnsupportedType like the in-process version."""
    result = await _run("precheck", kind, None, data, limits)
    return None if result is None else int(result)


# Plain text is decoded by pure Python, no native library to crash or loop: a small text file
# is parsed in a thread, since a process per document (0.1-0.5 s) would be most of its ingest
# time. A large one still goes to a process, where decoding it (a few copies of the text, up to
# 4 bytes a character) stays under the memory cap instead of adding up across ingest workers.
IN_PROCESS_KINDS = frozenset({"txt", "md"})
IN_PROCESS_MAX_BYTES = 1 * MiB


async def parse(kind: str, path: Path, limits: Limits) -> list[Page]:
    """`parse.parse` of the file at `path`: in a parser process, or a thread for small text."""
    if kind in IN_PROCESS_KINDS and path.stat().st_size <= IN_PROCESS_MAX_BYTES:
        from backend.ingest import parse as parsers

        data = await asyncio.to_thread(path.read_bytes)
        return await asyncio.to_thread(parsers.parse, kind, data, max_chars=limits.max_chars)
    result = await _run("parse", kind, path, None, limits)
    return [Page(None if n is None else int(n), str(text)) for n, text in result]


# -- parent side -----------------------------------------------------------------------------------


async def _run(op: str, kind: str, path: Path | None, data: bytes | None, limits: Limits) -> Any:
    cmd = [sys.executable, "-m", "backend.ingest.isolate", op, kind, json.dumps(asdict(limits))]
    if path is not None:
        cmd.append(str(path))
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_child_env(),
        )
    except OSError as exc:
        raise ParserUnavailable(f"cannot start a parser process: {exc}") from None
    max_output = limits.max_chars * 4 + OUTPUT_SLACK_BYTES
    try:
        async with asyncio.timeout(limits.timeout_s):
            out, err = await asyncio.gather(_exchange(proc, data, max_output), _tail(proc.stderr))
            code = await proc.wait()
    except TimeoutError:
        await _kill(proc)
        raise InvalidDocument(
            f"parse timed out after {limits.timeout_s:g} s (PARSE_TIMEOUT_S)"
        ) from None
    except BaseException:  # cancelled, or output over the cap
        await _kill(proc)
        raise
    return _result(out, err, code, limits)


def _child_env() -> dict[str, str]:
    # The child must import this `backend` package, wherever the server was started from.
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


async def _exchange(proc: asyncio.subprocess.Process, data: bytes | None, cap: int) -> bytes:
    if data is not None and proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(data)
            await proc.stdin.drain()
        proc.stdin.close()
    assert proc.stdout is not None
    out = bytearray()
    while chunk := await proc.stdout.read(1 * MiB):
        out += chunk
        if len(out) > cap:
            raise InvalidDocument(f"the parser produced more than {cap} bytes of output")
    return bytes(out)


async def _tail(stream: asyncio.StreamReader | None) -> bytes:
    kept = b""
    if stream is not None:
        while chunk := await stream.read(65536):
            kept = (kept + chunk)[-STDERR_KEEP_BYTES:]
    return kept


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        # Shielded: a second cancellation must not leave a zombie behind.
        await asyncio.shield(proc.wait())


def _result(out: bytes, err: bytes, code: int, limits: Limits) -> Any:
    try:
        reply = json.loads(out)
        status, payload = reply["status"], reply.get("payload")
    except (ValueError, TypeError, KeyError):
        how = _describe_exit(code)
        log.warning("parser process died (%s): %s", how, err.decode(errors="replace")[-500:])
        raise InvalidDocument(
            f"the parser crashed ({how}): the file is malformed, or needs more memory than "
            f"PARSE_MEMORY_MB={limits.memory_mb}"
        ) from None
    if status == "ok":
        return payload
    if status == "invalid":
        raise InvalidDocument(str(payload))
    if status == "unsupported":
        raise UnsupportedType(str(payload))
    if status == "memory":
        raise InvalidDocument(
            f"parser exceeded memory limit of {limits.memory_mb} MiB (PARSE_MEMORY_MB)"
        )
    raise InvalidDocument(f"cannot parse the file: {payload}")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# -- child side ------------------------------------------------------------------------------------


def _confine(limits: Limits) -> None:
    # Relative to what the interpreter already maps, so PARSE_MEMORY_MB means the same whatever
    # the libraries weigh.
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = mapped + limits.memory_mb * MiB
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    # A CPU-time cap as well: should the server die without killing us, we still stop.
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime + limits.timeout_s) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _work(op: str, kind: str, limits: Limits, path: str | None) -> Any:
    from backend.ingest import parse as parsers

    if op == "precheck":
        data = sys.stdin.buffer.read()
        return parsers.precheck(kind, data, max_pdf_pages=limits.max_pdf_pages)
    assert path is not None
    data = Path(path).read_bytes()
    pages = parsers.parse(
        kind, data, max_pdf_pages=limits.max_pdf_pages, max_chars=limits.max_chars
    )
    return [[p.number, p.text] for p in pages]


def main(argv: list[str]) -> int:
    op, kind, raw_limits, *rest = argv
    limits = Limits(**json.loads(raw_limits))
    reply: dict[str, Any]
    try:
        _confine(limits)
        reply = {"status": "ok", "payload": _work(op, kind, limits, rest[0] if rest else None)}
    except UnsupportedType as exc:
        reply = {"status": "unsupported", "payload": str(exc)}
    except InvalidDocument as exc:
        reply = {"status": "invalid", "payload": str(exc)}
    except MemoryError:
        reply = {"status": "memory"}
    except Exception as exc:
        reply = {"status": "error", "payload": f"{type(exc).__name__}: {exc}"}
    try:
        # errors="replace": a lone surrogate from a broken text layer becomes "?".
        body = json.dumps(reply, ensure_ascii=False).encode("utf-8", errors="replace")
    except MemoryError:
        body = b'{"status": "memory"}'
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
