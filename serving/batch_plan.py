"""Length-sorted token-budget batches: the plan the batcher (serving/batcher.py) runs."""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(lengths: Sequence[int], token_budget: int, max_items: int) -> list[list[int]]:
    """Indices of `lengths` cut into batches, longest first, each padded batch within budget.

    A batch pads to its longest item, so its cost is `len(longest) * count`; items are sorted
    by length (descending) and a batch is closed before it would exceed `token_budget` padded
    tokens or `max_items` items. An item longer than the budget goes alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = max(1, lengths[i])
        if current and (
            len(current) >= max_items or max(longest, n) * (len(current) + 1) > token_budget
        ):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches
