"""Embedding runtimes. `load_embedder` builds the one the settings name."""

from __future__ import annotations

from models.embedder.base import Embedder, EmbedderInfo
from models.settings import MLSettings

__all__ = ["Embedder", "EmbedderInfo", "load_embedder"]


def load_embedder(settings: MLSettings, gpu: bool | None = None) -> Embedder:
    """The embedder `settings.embedder` from the BentoML model store, on ONNX Runtime."""
    from models.embedder.onnx import OnnxEmbedder

    return OnnxEmbedder.from_store(settings.embedder, settings, gpu=gpu)
