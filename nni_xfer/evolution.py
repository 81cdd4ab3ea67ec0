"""Evolutionary operators shared by the evolutionary strategies (EAT-NAS now; ModuleNet may later).

Everything draws from a ``numpy.random.Generator`` passed in (the strategy's own, so its state
round-trips with the strategy) and works on plain data.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> pop = [{'id': i, 'score': s} for i, s in enumerate([0.3, 0.9, 0.5, 0.1])]
>>> t = tournament(rng, pop, 4, key=lambda m: m['score'])
>>> t.best['id'], t.worst['id']
(1, 3)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import ConfigError


def sample(rng, items: Sequence, k: int) -> list:
    """``k`` distinct items drawn uniformly (all of them, shuffled, when ``k >= len(items)``)."""
    k = min(k, len(items))
    idx = rng.choice(len(items), size=k, replace=False)
    return [items[int(i)] for i in idx]


@dataclass
class Tournament:
    """The outcome of one tournament: the sample, its best and its worst member."""

    sample: list
    best: Any
    worst: Any


def tournament(rng, population: Sequence, size: int, key: Callable[[Any], float]) -> Tournament:
    """Tournament selection (Goldberg & Deb 1990): draw ``size`` members, pick best and worst by ``key``.

    Ties go to the member drawn first, so the result depends only on the RNG state.
    """
    if not population:
        raise ValueError('tournament on an empty population')
    s = sample(rng, population, size)
    best = max(s, key=key)
    worst = min(s, key=key)
    return Tournament(s, best, worst)


class Mutation:
    """A mutation operator ``operator(item, rng) -> item`` with retries until the offspring is acceptable.

    ``accept(child)`` (e.g. "not evaluated before") filters offspring; :meth:`do` returns ``None``
    when ``max_tries`` draws gave nothing acceptable.
    """

    def __init__(self, operator: Callable[[Any, Any], Any], accept: Callable[[Any], bool] | None = None,
                 max_tries: int = 100):
        if max_tries < 1:
            raise ValueError('max_tries must be >= 1')
        self.operator = operator
        self.accept = accept or (lambda child: True)
        self.max_tries = max_tries

    def do(self, rng, parent: Any) -> Any | None:
        for _ in range(self.max_tries):
            child = self.operator(parent, rng)
            if self.accept(child):
                return child
        return None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for fewer than two values)."""
    if not values:
        return float('nan'), float('nan')
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def soft_constraint(value: float, target: float, alpha: float, beta: float) -> float:
    """MnasNet/EAT-NAS weight [value / target] ** w, w = alpha below target, beta at or above it."""
    if target <= 0:
        raise ConfigError('target', f'must be > 0, got {target}')
    w = alpha if value < target else beta
    return (max(value, 1e-12) / target) ** w
