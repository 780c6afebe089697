"""Embedding runtimes. `load_embedder` builds the one the settings name."""

from __future__ import annotations

from models.runtime.embedder.base import Embedder, EmbedderInfo
from models.runtime.settings import MLSettings

__all__ = ["Embedder", "EmbedderInfo", "load_embedder"]


def load_embedder(settings: MLSettings, gpu: bool | None = None) -> Embedder:
    """The embedder `settings.embedder` from the BentoML model store, on ONNX Runtime."""
    from models.runtime.embedder.onnx import OnnxEmbedder

    return OnnxEmbedder.from_store(settings.embedder, settings, gpu=gpu)
