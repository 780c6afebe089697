"""Cross-encoder runtimes. `load_reranker` builds the one the settings name, or None."""

from __future__ import annotations

import logging

from models.runtime.registry import find_model
from models.runtime.reranker.base import Reranker, RerankerInfo
from models.runtime.settings import MLSettings

__all__ = ["Reranker", "RerankerInfo", "load_reranker"]

log = logging.getLogger(__name__)


def load_reranker(settings: MLSettings, gpu: bool | None = None) -> Reranker | None:
    """The reranker `settings.reranker` from the BentoML model store, on the backend
    `settings.reranker_backend` ("flag": FlagEmbedding/PyTorch, "onnx": ONNX Runtime).

    None (logged once) when it is not in the store, unless `settings.require_reranker`.
    """
    model = find_model(settings.reranker)
    if model is None:
        msg = (
            f"reranker {settings.reranker!r} is not in the BentoML model store; import one with "
            f"`ragctl models import-reranker SOURCE --name {settings.reranker}`"
        )
        if settings.require_reranker:
            raise LookupError(msg + " (ML_API_REQUIRE_RERANKER is set)")
        log.warning("%s; serving without reranking", msg)
        return None
    meta = dict(model.info.metadata)
    if meta.get("kind") != "reranker":
        raise ValueError(f"{model.tag} is not a reranker (kind={meta.get('kind')!r})")
    kwargs = {"name": settings.reranker, "tag": str(model.tag), "gpu": gpu}
    if settings.reranker_backend == "onnx":
        from models.runtime.reranker.onnx import OnnxCrossEncoder

        return OnnxCrossEncoder(model.path, meta, settings, **kwargs)
    from models.runtime.reranker.flag import FlagCrossEncoder

    return FlagCrossEncoder(model.path, meta, settings, **kwargs)
