"""`ragctl`: the project's one command line."""

from __future__ import annotations

import typer

from ragctl import ingest_cmd, models_cmd, reindex_cmd, up

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-hosted retrieval stack.")
app.add_typer(models_cmd.app, name="models", help="Import and list models in the BentoML store.")
app.command()(up.up)
ingest_cmd.register(app)
app.command()(reindex_cmd.reindex)


if __name__ == "__main__":
    app()
