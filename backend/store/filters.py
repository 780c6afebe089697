"""The search filter in engine-neutral form, translated by each engine with its own classes.

Both engines must select exactly the same points, so the rules live here once:
- the embedded engine stores `ready` as 0/1 and matches the int 1 (Qdrant Edge never matches a
  boolean `MatchValue`), and matches a boolean metadata value on `metadata_bools.<key>` as 0/1;
  the server engine keeps booleans (its existing collections hold them) and rewrites these
  conditions onto them (`backend.store.server`);
- a float is matched as the range [v, v] (`MatchValue` has no floats); a list of floats as an
  OR of such ranges, which the engines evaluate in Rust per candidate (cheap: no Python loop);
- strings and ints use `MatchValue` / `MatchAny`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from backend.store.base import MetadataFilter, MetadataValue

Kind = Literal["match", "any", "range"]


@dataclass(frozen=True)
class Cond:
    """One field condition: `match` one value, `any` of values, or float `range` [v, v]."""

    key: str
    kind: Kind
    value: Any


# A condition list: every item must hold; an item that is a list is an OR of its conditions.
Clause = Cond | list[Cond]


def _metadata(key: str, value: MetadataValue | list[MetadataValue]) -> Clause:
    values = value if isinstance(value, list) else [value]
    bools = [int(v) for v in values if isinstance(v, bool)]
    floats = [float(v) for v in values if isinstance(v, float)]
    strs = [v for v in values if isinstance(v, str)]
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    path = f"metadata.{key}"
    alts: list[Cond] = []
    if bools:
        alts.append(Cond(f"metadata_bools.{key}", "any", sorted(set(bools))))
    if strs:
        alts.append(Cond(path, "any", strs))
    if ints:
        alts.append(Cond(path, "any", ints))
    alts.extend(Cond(path, "range", f) for f in sorted(set(floats)))
    if len(alts) == 1:
        return alts[0]
    if not alts:  # an empty any-of matches nothing, as before
        return Cond(path, "any", [])
    return alts


def clauses(document_ids: list[str] | None, metadata: MetadataFilter | None) -> list[Clause]:
    """What a search requires, besides readiness."""
    out: list[Clause] = []
    if document_ids is not None:
        out.append(Cond("document_id", "any", list(document_ids)))
    for key, value in (metadata or {}).items():
        out.append(_metadata(key, value))
    return out


def build(
    items: list[Clause],
    *,
    field: Callable[[Cond], Any],
    any_of: Callable[[list[Any]], Any],
    all_of: Callable[[list[Any]], Any],
) -> Any:
    """Translate clauses with an engine's constructors: `field(cond)` one condition,
    `any_of(conds)` an OR filter, `all_of(conds)` the AND filter returned."""
    must: list[Any] = []
    for item in items:
        if isinstance(item, list):
            must.append(any_of([field(c) for c in item]))
        else:
            must.append(field(item))
    return all_of(must)
