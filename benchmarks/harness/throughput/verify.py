"""What every HTTP answer is checked against: status, count, cosine to the in-process vectors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Checked:
    ok: bool
    detail: str = ""
    min_cos: float | None = None
    max_abs: float | None = None


def min_cosine(got: np.ndarray, ref: np.ndarray) -> float:
    got = got / np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(got * ref, axis=1)))
