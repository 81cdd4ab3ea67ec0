"""ModuleNet's search score (paper Eq. 4–8).

>>> sim(['r34', 'r34', 'v16', 'r34', 'r34'])
0.4
>>> lrate([2.0, 1.0, 0.5])
0.75
>>> round(score(0.3, 0.75, 0.4, alpha=25, beta=25), 4)
-8.45
"""
from __future__ import annotations

import math
from typing import Sequence


def lrate(losses: Sequence[float]) -> float:
    """Loss changing rate (Eq. 6): (loss of epoch 1 − loss of epoch n) / loss of epoch 1, clipped to [0, 1].

    Fewer than two epochs, a non-positive or non-finite first loss → 0.0.
    """
    if len(losses) < 2:
        return 0.0
    first, last = float(losses[0]), float(losses[-1])
    if not (math.isfinite(first) and first > 0 and math.isfinite(last)):
        return 0.0
    return min(1.0, max(0.0, (first - last) / first))


def sim(code: Sequence, c: int | None = None) -> float:
    """Architecture similarity (Eq. 7–8): the leading run of positions from the same source as position 1, over c."""
    code = list(code)
    c = len(code) if c is None else c
    if c <= 0 or not code:
        return 0.0
    run = 0
    for x in code[:c]:
        if x != code[0]:
            break
        run += 1
    return run / c


def score(err_val: float, lrate: float, sim: float, alpha: float, beta: float) -> float:
    """Eq. 4: err_val − α·lrate + β·sim (minimised)."""
    return float(err_val) - float(alpha) * float(lrate) + float(beta) * float(sim)
