"""Which prompt a request gets, for asymmetric models (e5, bge: "query: " vs "passage: ").

A model carries its prompts (models/store.py reads them from sentence-transformers' config at
import, or takes them from `ragctl models import-embedder --prompt`). TEI clients choose one by
`prompt_name`; Cohere clients by `input_type`; without either, the model's default prompt (if
it declares one) applies, as in sentence-transformers.
"""

from __future__ import annotations

from models.runtime.embedder.base import EmbedderInfo
from serving.errors import APIError

# Cohere input types -> the prompt names models commonly use for them, in order of preference.
INPUT_TYPE_NAMES = {
    "search_query": ("search_query", "query"),
    "search_document": ("search_document", "document", "passage", "doc"),
    "classification": ("classification",),
    "clustering": ("clustering",),
}


def by_name(info: EmbedderInfo, prompt_name: str | None) -> str:
    """The prompt text for TEI's `prompt_name` (the default prompt when None)."""
    if prompt_name is None:
        return info.prompts.get(info.default_prompt_name or "", "")
    if prompt_name not in info.prompts:
        available = ", ".join(f"`{n}`" for n in info.prompts) or "none"
        raise APIError(
            422,
            f"prompt_name `{prompt_name}` is not a prompt of this model (its prompts: {available})",
            param="prompt_name",
            code="invalid_value",
        )
    return info.prompts[prompt_name]


def by_input_type(info: EmbedderInfo, input_type: str | None) -> str:
    """The prompt text for Cohere's `input_type`: the model's prompt of that role, else the
    default prompt (symmetric models have none: "")."""
    for name in INPUT_TYPE_NAMES.get(input_type or "", ()):
        if name in info.prompts:
            return info.prompts[name]
    return by_name(info, None)


def apply(prompt: str, texts: list[str]) -> list[str]:
    return [prompt + t for t in texts] if prompt else texts
