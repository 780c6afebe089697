"""BM25 as Qdrant sparse vectors.

Qdrant computes BM25 for us when the sparse vector is declared with `modifier=Modifier.IDF`:
at query time it multiplies each query term weight by
`idf(t) = ln((N - df(t) + 0.5) / (df(t) + 0.5) + 1)`, with `N` and `df` taken from the points in
the collection, and scores a point by the dot product with its stored sparse vector. So

* a **document** (chunk) stores, per term, the BM25 term-frequency component with length
  saturation `tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))`;
* a **query** stores weight 1 per unique term (repeated query words do not count twice);

and `score = sum over query terms of idf(t) * tf-component(t, doc)`, which is Okapi BM25.

Tokenisation: lowercase, Unicode word characters (`[^\\W_]+`, so digits and non-Latin letters
are kept and underscores split), the English stop-words below dropped, Snowball English stemmer
("studies", "studied", "study" -> "studi"). `len` is the number of tokens left after stop-word
removal, as in Lucene.

Term ids are `zlib.crc32(stem)`: an unsigned 32-bit value (the range of Qdrant sparse indices)
that is identical in every process, machine and Python version (unlike `hash()`), so vectors
written at ingest match queries encoded later. With a vocabulary of ~10^5 stems, the chance of
any two colliding is ~10^10 / 2^33, about one pair; a collision only merges two rare terms.

`avg_len` must be fixed without corpus statistics: ingest encodes each chunk on its own, and the
stored weights cannot be revised when the collection grows. It should be the typical length of a
chunk in terms (after stop-word removal). The backend cuts chunks at 256 embedding-model
(wordpiece) tokens; measured on SciFact abstracts, a full chunk holds ~116 terms (0.45 terms per
wordpiece: scientific words split into several wordpieces, and ~1/3 of the words are
stop-words), a whole abstract ~151, and the mean chunk (short last chunks included) ~90. The
default, 128, sits in that range. Getting `avg_len` wrong by a factor `c` only moves the
effective `k1` and `b`: `k1 * (1 - b + b * len / (c * avg))` equals
`k1' * (1 - b' + b' * len / avg)` for some `k1'`, `b'`. The measured effect is small: nDCG@10
on SciFact 0.7013 at 128, 0.6947 at 64, 0.6990 at 256, 0.6948 at 512
(benchmarks/quality_inprocess.py; results in benchmarks/README.md).

Changing the tokenisation, stop-words, stemmer or hashing changes the term ids: bump
`ENCODER_VERSION` and re-index.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections import Counter
from functools import lru_cache

import snowballstemmer

ENCODER_VERSION = 1
DEFAULT_K1 = 1.2
DEFAULT_B = 0.75
DEFAULT_AVG_LEN = 128.0

# English stop-words: the NLTK English list as is (179 words: the Snowball English stop list plus
# contraction fragments; entries with an apostrophe never match since tokens split there).
# Negations ("no", "not", "nor") are in: for keyword retrieval they are as frequent and as
# uninformative as any other function word. On SciFact this list beats Lucene's 33-word set and
# no stop-words at all (nDCG@10 0.7013 vs 0.6980 vs 0.6975).
_NLTK_ENGLISH = """
    a about above after again against ain all am an and any are aren aren't as at be because
    been before being below between both but by can couldn couldn't d did didn didn't do does
    doesn doesn't doing don don't down during each few for from further had hadn hadn't has hasn
    hasn't have haven haven't having he her here hers herself him himself his how i if in into
    is isn isn't it it's its itself just ll m ma me mightn mightn't more most mustn mustn't my
    myself needn needn't no nor not now o of off on once only or other our ours ourselves out
    over own re s same shan shan't she she's should should've shouldn shouldn't so some such t
    than that that'll the their theirs them themselves then there these they this those through
    to too under until up ve very was wasn wasn't we were weren weren't what when where which
    while who whom why will with won won't wouldn wouldn't y you you'd you'll you're you've your
    yours yourself yourselves
"""
STOP_WORDS: frozenset[str] = frozenset(_NLTK_ENGLISH.split())

# Letters and digits in any script; apostrophes and hyphens split words ("don't" -> "don", "t",
# both stop-words; "IL-6" -> "il", "6").
_WORD = re.compile(r"[^\W_]+")
# A snowball stemmer keeps its word in instance state: one per thread (ingest encodes documents
# in several worker threads at once; a shared one garbles words or raises IndexError).
_LOCAL = threading.local()


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    stemmer = getattr(_LOCAL, "stemmer", None)
    if stemmer is None:
        stemmer = _LOCAL.stemmer = snowballstemmer.stemmer("english")
    return stemmer.stemWord(word)


@lru_cache(maxsize=200_000)
def term_id(term: str) -> int:
    """Stable unsigned 32-bit id of a (stemmed) term."""
    return zlib.crc32(term.encode("utf-8"))


def tokenize(text: str, stop_words: frozenset[str] = STOP_WORDS) -> list[str]:
    """Lowercased, stop-word-free, stemmed tokens of `text`, in order."""
    out: list[str] = []
    append = out.append
    for word in _WORD.findall(text.lower()):
        if word not in stop_words:
            append(_stem(word))
    return out


class BM25Encoder:
    """Encode text as BM25 sparse vectors for a Qdrant sparse vector with `Modifier.IDF`."""

    def __init__(
        self,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
        avg_len: float = DEFAULT_AVG_LEN,
        stop_words: frozenset[str] = STOP_WORDS,
    ) -> None:
        if k1 < 0:
            raise ValueError("k1 must be >= 0")
        if not 0.0 <= b <= 1.0:
            raise ValueError("b must be within [0, 1]")
        if avg_len <= 0:
            raise ValueError("avg_len must be > 0")
        self.k1 = float(k1)
        self.b = float(b)
        self.avg_len = float(avg_len)
        self.stop_words = frozenset(stop_words)

    def __repr__(self) -> str:
        return f"BM25Encoder(k1={self.k1}, b={self.b}, avg_len={self.avg_len})"

    @staticmethod
    def _ids(counts: Counter[str]) -> dict[int, float]:
        """Merge terms into ids (a hash collision adds the two counts, like one term)."""
        merged: dict[int, float] = {}
        for term, n in counts.items():
            tid = term_id(term)
            merged[tid] = merged.get(tid, 0.0) + n
        return merged

    def term_weight(self, tf: float, length: int) -> float:
        """The saturated term-frequency component of BM25."""
        k1, b = self.k1, self.b
        return tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * length / self.avg_len))

    def encode_document(self, text: str) -> tuple[list[int], list[float]]:
        """(indices, values) of a document or chunk, sorted by index; empty for no terms."""
        tokens = tokenize(text, self.stop_words)
        if not tokens:
            return [], []
        length = len(tokens)
        merged = self._ids(Counter(tokens))
        norm = self.k1 * (1.0 - self.b + self.b * length / self.avg_len)
        k1p1 = self.k1 + 1.0
        indices = sorted(merged)
        values = [merged[i] * k1p1 / (merged[i] + norm) for i in indices]
        return indices, values

    def encode_query(self, text: str) -> tuple[list[int], list[float]]:
        """(indices, values) of a query: weight 1 per unique term, sorted by index."""
        indices = sorted({term_id(t) for t in tokenize(text, self.stop_words)})
        return indices, [1.0] * len(indices)

    def encode_documents(self, texts: list[str]) -> list[tuple[list[int], list[float]]]:
        return [self.encode_document(t) for t in texts]
