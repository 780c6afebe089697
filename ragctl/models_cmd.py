"""`ragctl models`: import models into the BentoML model store and list them.

The store is `$BENTOML_HOME/models` (default ~/bentoml/models). Heavy imports (torch,
transformers) happen only inside the import commands, so `list` stays quick.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console()
err_console = Console(stderr=True)


@contextmanager
def _status(start: str) -> Iterator[object]:
    """A spinner whose text the store's progress callback updates."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    with console.status(start) as status:

        def progress(msg: str) -> None:
            status.update(msg)

        yield progress


def _line(text: str) -> None:
    """One line, never wrapped (people grep these), no markup read into model names."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def _fail(err: Exception) -> typer.Exit:
    err_console.print(f"error: {err}", soft_wrap=True, markup=False, highlight=False)
    return typer.Exit(1)


@app.command("import-embedder")
def import_embedder(
    source: Annotated[str, typer.Argument(help="Hugging Face model id or local folder.")],
    name: Annotated[str, typer.Option(help="Name in the model store.")] = "embedder",
    pooling: Annotated[
        str | None,
        typer.Option(help="mean, cls or last; default: the model's (mean for plain models)."),
    ] = None,
    normalize: Annotated[
        bool | None,
        typer.Option(
            "--normalize/--no-normalize",
            help="Whether the model is meant to be L2-normalized; default: the model's.",
        ),
    ] = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also store a dynamically quantized int8 copy for CPU (verified against float32)"
            ", served with ML_API_EMBEDDER_PRECISION=int8.",
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Import again even if already stored.")] = False,
) -> None:
    """Export an embedder to ONNX and store it with its tokenizer and metadata."""
    from models.build import importer

    try:
        with _status(f"importing {source}") as progress:
            tag = importer.import_embedder(
                source,
                name,
                pooling=pooling,
                normalize=normalize,
                int8=int8,
                force=force,
                progress=progress,
            )
    except (ValueError, RuntimeError, OSError) as err:
        raise _fail(err) from err
    _line(f"{name}: stored as {tag}")


@app.command("import-reranker")
def import_reranker(
    source: Annotated[str, typer.Argument(help="Hugging Face model id or local folder.")],
    name: Annotated[str, typer.Option(help="Name in the model store.")] = "reranker",
    onnx: Annotated[
        bool, typer.Option("--onnx/--no-onnx", help="Also export model.onnx (ONNX backend).")
    ] = True,
    force: Annotated[bool, typer.Option(help="Import again even if already stored.")] = False,
) -> None:
    """Store a cross-encoder (and its ONNX export) with its tokenizer and metadata."""
    from models.build import importer

    try:
        with _status(f"importing {source}") as progress:
            tag = importer.import_reranker(source, name, onnx=onnx, force=force, progress=progress)
    except (ValueError, RuntimeError, OSError) as err:
        raise _fail(err) from err
    _line(f"{name}: stored as {tag}")


@app.command("import-defaults")
def import_defaults(
    reranker: Annotated[
        str | None,
        typer.Option(
            help="Reranker to import (HF id or folder). Default: BAAI/bge-reranker-v2-m3 with "
            "a GPU, cross-encoder/ms-marco-MiniLM-L-6-v2 without."
        ),
    ] = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also store the embedder's int8 copy for CPU (ML_API_EMBEDDER_PRECISION=int8); "
            "a stored default embedder without it is imported again.",
        ),
    ] = False,
) -> None:
    """all-MiniLM-L6-v2 as `embedder` (shipped, no download) and a reranker from the hub as
    `reranker` (skipped with a note when the hub is unreachable). Stored models are kept."""
    from models.build import importer

    try:
        with _status("importing the default models") as progress:
            importer.import_defaults(reranker, int8=int8, echo=_line, progress=progress)
    except (ValueError, RuntimeError, OSError) as err:
        raise _fail(err) from err


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@app.command("list")
def list_models() -> None:
    """Models in the store: name, tag, kind, dimension / max length, source, size, created."""
    from models.build import importer

    rows = importer.list_models()
    if not rows:
        console.print("No models in the store. Run `ragctl models import-defaults`.")
        return
    table = Table(title="BentoML model store")
    for col in ("name", "tag", "kind", "dim / max len", "source", "size", "created"):
        table.add_column(col, overflow="fold")
    for r in rows:
        dims = f"{r['dimension'] or '-'} / {r['max_length'] or '-'}"
        table.add_row(
            r["name"],
            r["tag"],
            r["kind"] or "-",
            dims,
            r["source"] or "-",
            _size(r["size_bytes"]),
            r["created"].replace("T", " ").split("+")[0],
        )
    console.print(table)
