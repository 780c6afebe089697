"""Keep one request's bad input from failing the others it is batched with.

Two layers. First, everything a model could choke on is checked per request before it is
queued (`check_token_ids`: ids outside the vocabulary make ONNX Runtime fail the whole batch).
Second, should a batch fail anyway, `isolating` retries its items one by one, so only the item
that really fails gets an error (`ItemFailed`) and its batch-mates get their results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from serving.errors import APIError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# What the 422 for foreign token ids tells the user to do; langchain-openai sends tiktoken ids
# (OpenAI's cl100k vocabulary) unless told not to.
TEXT_HINT = (
    "token ids must come from this model's own tokenizer (GET /tokenizer, or POST /tokenize), "
    "with its special tokens; to send text instead, pass strings (langchain-openai: "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False))"
)


class ItemFailed:
    """A batch item the model failed on even when run alone; carries the exception."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def isolating(run: Callable[[list[T]], Sequence[R]]) -> Callable[[list[T]], list[R | ItemFailed]]:
    """`run`, but a failing batch is retried item by item; items that still fail come back
    as `ItemFailed` instead of failing the whole batch."""

    def wrapped(batch: list[T]) -> list[R | ItemFailed]:
        try:
            return list(run(batch))
        except Exception as exc:
            if len(batch) == 1:
                log.warning("model failed on one item: %s", exc)
                return [ItemFailed(exc)]
            log.warning("batch of %d failed (%s); retrying its items one by one", len(batch), exc)
        out: list[R | ItemFailed] = []
        for item in batch:
            try:
                out.append(run([item])[0])
            except Exception as exc:
                log.warning("model failed on one item: %s", exc)
                out.append(ItemFailed(exc))
        return out

    return wrapped


def raise_failed(results: Sequence[Any], field: str) -> None:
    """A request whose own items failed in the model: an error for it alone."""
    for i, r in enumerate(results):
        if isinstance(r, ItemFailed):
            raise APIError(
                422,
                f"{field}[{i}] could not be processed by the model "
                f"({type(r.error).__name__}); the other requests in its batch were not affected",
                param=field,
                code="model_rejected_input",
            )


def vocab_size(tokenizer_json: str) -> int:
    """Ids the tokenizer can produce (added tokens included): the valid input range."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json).get_vocab_size(with_added_tokens=True)


def check_token_ids(ids: list[list[int]], vocab_size: int, field: str) -> None:
    """Every id in [0, vocab_size), or a 422 naming the first bad one and the vocabulary."""
    if all(row and min(row) >= 0 and max(row) < vocab_size for row in ids):
        return  # the common case, at C speed
    for i, row in enumerate(ids):
        for j, t in enumerate(row):
            if not 0 <= t < vocab_size:
                raise APIError(
                    422,
                    f"{field}[{i}][{j}] = {t} is outside the model's vocabulary of {vocab_size} "
                    f"token ids (0..{vocab_size - 1}); {TEXT_HINT}",
                    param=field,
                    code="token_id_out_of_vocabulary",
                )
