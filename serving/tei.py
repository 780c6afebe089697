"""TEI's `/tokenize` and `/decode`, answered with the served embedder's own tokenizer.

Clients that count or pre-tokenize (and TEI's own tooling) expect these shapes: `/tokenize`
returns, per input, the tokens with their ids, text, special flag and character offsets;
`/decode` turns id lists back into text. The ids are the ones the embedding routes accept.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from serving.engine import Engine
from serving.validation import check_token_ids


class TEITokenizer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @cached_property
    def _tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self.engine.embedder.tokenizer_json())
        tok.no_padding()
        tok.no_truncation()
        return tok

    def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[dict[str, Any]]]:
        # The embedder lowercases for models that need it; offsets stay those of the input.
        lower = bool(getattr(self.engine.embedder, "lowercase", False))
        prepared = [t.lower() if lower else t for t in texts]
        out = []
        for text, enc in zip(
            texts,
            self._tokenizer.encode_batch(prepared, add_special_tokens=add_special_tokens),
            strict=True,
        ):
            tokens = []
            for tid, special, (start, stop) in zip(
                enc.ids, enc.special_tokens_mask, enc.offsets, strict=True
            ):
                is_special = bool(special)
                piece = self._tokenizer.id_to_token(tid) if is_special else text[start:stop]
                tokens.append(
                    {
                        "id": tid,
                        "text": piece,
                        "special": is_special,
                        "start": None if is_special else start,
                        "stop": None if is_special else stop,
                    }
                )
            out.append(tokens)
        return out

    def decode(self, ids: list[list[int]], skip_special_tokens: bool) -> list[str]:
        check_token_ids(ids, self.engine.vocab_size, "ids")
        return self._tokenizer.decode_batch(ids, skip_special_tokens=skip_special_tokens)
