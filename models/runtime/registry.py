"""Read-only access to the BentoML model store: what the ml-api looks up at start-up.

Writing to the store (imports) is `models.build.importer`'s job; the names of the models the
project ships by default live here because the runtime's error messages quote them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import bentoml

DEFAULT_EMBEDDER_SOURCE = "sentence-transformers/all-MiniLM-L6-v2"


def find_model(name: str) -> bentoml.Model | None:
    """The model `name` (or `name:version`) in the store, latest version; None when absent."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(name)
    except NotFound:
        return None


def model_path(model: bentoml.Model) -> Path:
    return Path(model.path)
