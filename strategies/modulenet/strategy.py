"""ModuleNet's search: NSGA-II over module strings (paper Algorithm 1, Sec. IV: population 40, 30 generations).

An individual is one choice per position (``module_0`` … ``module_{c-1}``, any categorical space
works). Generation 0 is ``population`` distinct random strings; every later generation breeds
``population`` offspring by binary tournament on (non-domination rank, crowding distance), uniform
crossover and per-gene mutation, evaluates them, and keeps the best ``population`` of parents ∪
offspring by non-dominated sorting and crowding distance. Non-dominated sorting and crowding
distance are pymoo's; selection, crossover and mutation draw from the strategy's own RNG so the
search resumes exactly from its ``state_dict``.

Objectives are metric keys, all minimised: ``['default']`` (the paper's single-objective score) or
e.g. ``['default', 'params']`` / ``['default', 'flops']`` for a multi-objective search. A failed
trial counts as +inf in every objective, so it never survives, and the search goes on. Per
generation the strategy logs how many offspring entered the population (``new_survivors``, paper
Fig. 9).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from nni_xfer.errors import ConfigError
from nni_xfer.registry import STRATEGIES
from nni_xfer.store import arch_key
from nni_xfer.strategy import BaseStrategy, Proposal, SpaceInfo, StrategyError, check_int

log = logging.getLogger(__name__)


def _rank_and_crowding(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-domination rank (0 = best front) and crowding distance of each row (pymoo)."""
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
    rank = np.zeros(len(F), dtype=int)
    crowd = np.zeros(len(F))
    for r, front in enumerate(NonDominatedSorting().do(_finite(F))):
        rank[front] = r
        crowd[front] = calc_crowding_distance(_finite(F[front]))
    return rank, crowd


def _finite(F: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(F), F, 1e300)


def _survive(F: np.ndarray, n: int) -> list[int]:
    """Indices of the ``n`` survivors: whole fronts in order, the last one cut by crowding distance."""
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
    keep: list[int] = []
    for front in NonDominatedSorting().do(_finite(F)):
        front = list(front)
        if len(keep) + len(front) <= n:
            keep += front
        else:
            cd = calc_crowding_distance(_finite(F[front]))
            order = sorted(range(len(front)), key=lambda i: (-cd[i], front[i]))  # stable on ties
            keep += [front[i] for i in order[:n - len(keep)]]
        if len(keep) >= n:
            break
    return keep


@STRATEGIES.register('modulenet', description='ModuleNet NSGA-II over module strings (single or multi-objective)')
class ModuleNetStrategy(BaseStrategy):
    """NSGA-II over categorical strings (see the module docstring).

    Args:
        population: population size (paper 40).
        generations: number of generations including the initial one (paper 30).
        objectives: metric keys to minimise, ``'default'`` first.
        crossover_prob: probability that a child mixes two parents (uniform crossover).
        mutation_prob: per-position mutation probability (default 1 / number of positions).
        max_retries: draws tried to avoid an already evaluated string before dropping a child.
        init: the trials' ``init`` block (default ``{'kind': 'kb_modules'}``: the knowledge base's weights).
    """

    #: tiny real run for the reliability tests (nni_xfer.testing.quick); kb_modules init needs a
    #: module_chain knowledge base, so the quick run starts fresh on simple_cnn
    quick_config = {'space': 'simple_cnn', 'space_args': {'widths': [8, 16], 'depths': [1, 2], 'kernels': [3, 5]},
                    'mode': 'minimize', 'stateful': True,
                    'strategy_args': {'population': 3, 'generations': 4, 'init': {'kind': 'fresh'}}}

    @classmethod
    def contract_case(cls):
        """Quick mock case for the shared contract suite (population 4, 3 generations, 2 objectives)."""
        import json

        from nni_xfer.testing.strategy_contract import ContractCase, mock_metrics

        def metrics(strategy, architecture):
            return {**mock_metrics(strategy, architecture), 'params': float(len(json.dumps(architecture)))}
        return ContractCase(kwargs={'population': 4, 'generations': 3}, metrics=metrics)

    def __init__(self, space: SpaceInfo, seed: int = 0, mode: str = 'minimize', population: int = 40,
                 generations: int = 30, objectives: list[str] = ('default',), crossover_prob: float = 0.9,
                 mutation_prob: float | None = None, max_retries: int = 100, init: dict | None = None):
        super().__init__(space, seed=seed, mode=mode)
        if init is not None and (not isinstance(init, dict) or 'kind' not in init):
            raise ConfigError('strategy_args.init', "expected a mapping with a 'kind' key")
        self.init = dict(init or {'kind': 'kb_modules'})
        if not space.dims:
            raise ConfigError('space', f'NSGA-II needs categorical choices; space {space.name!r} has none')
        if mode != 'minimize':
            raise ConfigError('mode', "ModuleNet's score is minimised; set classArgs.mode: minimize",
                              allowed=['minimize'])
        self.population = check_int(population, 'strategy_args.population', minimum=2)
        self.generations = check_int(generations, 'strategy_args.generations', minimum=1)
        objectives = list(objectives) if isinstance(objectives, (list, tuple)) else objectives
        if not isinstance(objectives, list) or not objectives or objectives[0] != 'default' \
                or any(not isinstance(o, str) for o in objectives) or len(set(objectives)) != len(objectives):
            raise ConfigError('strategy_args.objectives',
                              f"expected a list of distinct metric keys starting with 'default', got {objectives!r}")
        self.objectives = objectives
        for name, v in (('crossover_prob', crossover_prob), ('mutation_prob', mutation_prob)):
            if v is None and name == 'mutation_prob':
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ConfigError(f'strategy_args.{name}', f'expected a probability in [0, 1], got {v!r}')
        self.crossover_prob = float(crossover_prob)
        self.labels = list(space.dims)
        self.mutation_prob = float(mutation_prob) if mutation_prob is not None else 1.0 / len(self.labels)
        self.max_retries = check_int(max_retries, 'strategy_args.max_retries', minimum=1)
        # search state (JSON-safe)
        self.gen = 0
        self.pop: list[dict] = []      # survivors: {'architecture', 'objectives'}
        self.members: list[dict] = []  # this generation: {'architecture', 'objectives' (None until known)}
        self.queue: list[dict] = []    # architectures of this generation not handed out yet
        self.log: list[dict] = []
        self.finished = False
        self._start_generation()

    # ---- encoding ----
    def _genes(self, arch: dict) -> list[int]:
        return [self.space.dims[label].index(arch[label]) for label in self.labels]

    def _arch(self, genes: list[int]) -> dict:
        return {label: self.space.dims[label][g] for label, g in zip(self.labels, genes)}

    def _taken(self) -> set[str]:
        keys = {arch_key(m['architecture']) for m in self.members}
        keys |= {arch_key(p['architecture']) for p in self.pop}
        keys |= {arch_key(h['architecture']) for h in self.history if h['status'] == 'SUCCEEDED'}
        return keys

    # ---- generations ----
    def _start_generation(self) -> None:
        taken = self._taken()
        children: list[dict] = []
        size = min(self.population, self.space.size())
        if self.gen == 0:
            tries = 0
            while len(children) < size and tries < self.max_retries * size:
                tries += 1
                arch = self.random_architecture()
                if arch_key(arch) not in taken:
                    taken.add(arch_key(arch))
                    children.append(arch)
        else:
            F = np.array([p['objectives'] for p in self.pop], dtype=float)
            rank, crowd = _rank_and_crowding(F)
            for _ in range(self.population):
                for _ in range(self.max_retries):
                    child = self._breed(rank, crowd)
                    if arch_key(child) not in taken:
                        taken.add(arch_key(child))
                        children.append(child)
                        break
        self.members = [{'architecture': a, 'objectives': None} for a in children]
        self.queue = [dict(a) for a in children]
        if not children:
            self.finished = True
            log.info('NSGA-II: no new architecture left to breed; search finished at generation %d', self.gen)

    def _tournament(self, rank: np.ndarray, crowd: np.ndarray) -> int:
        a, b = (int(i) for i in self.rng.integers(len(rank), size=2))
        if rank[a] != rank[b]:
            return a if rank[a] < rank[b] else b
        if crowd[a] != crowd[b]:
            return a if crowd[a] > crowd[b] else b
        return a if self.rng.random() < 0.5 else b

    def _breed(self, rank: np.ndarray, crowd: np.ndarray) -> dict:
        p1 = self._genes(self.pop[self._tournament(rank, crowd)]['architecture'])
        p2 = self._genes(self.pop[self._tournament(rank, crowd)]['architecture'])
        if self.rng.random() < self.crossover_prob:
            mask = self.rng.random(len(p1)) < 0.5
            child = [a if m else b for a, b, m in zip(p1, p2, mask)]
        else:
            child = list(p1)
        for i, label in enumerate(self.labels):
            n = len(self.space.dims[label])
            if n > 1 and self.rng.random() < self.mutation_prob:
                other = int(self.rng.integers(n - 1))
                child[i] = other if other < child[i] else other + 1  # a different choice
        return self._arch(child)

    def _maybe_advance(self) -> None:
        while not self.finished and not self.queue and not self.pending \
                and all(m['objectives'] is not None for m in self.members):
            offspring = [m for m in self.members]
            combined = self.pop + offspring
            F = np.array([m['objectives'] for m in combined], dtype=float).reshape(len(combined), len(self.objectives))
            keep = _survive(F, self.population) if combined else []
            new = sum(1 for i in keep if i >= len(self.pop))
            self.pop = [combined[i] for i in keep]
            scores = [p['objectives'][0] for p in self.pop if math.isfinite(p['objectives'][0])]
            entry = {'generation': self.gen, 'evaluated': sum(math.isfinite(m['objectives'][0]) for m in offspring),
                     'failed': sum(not math.isfinite(m['objectives'][0]) for m in offspring),
                     'new_survivors': new, 'best': min(scores) if scores else None,
                     'mean': float(np.mean(scores)) if scores else None}
            self.log.append(entry)
            fmt = lambda v: 'n/a' if v is None else f'{v:.4f}'  # noqa: E731
            log.info('NSGA-II generation %d/%d: %d evaluated, %d failed, %d new survivors, best %s, mean %s',
                     entry['generation'] + 1, self.generations, entry['evaluated'], entry['failed'], new,
                     fmt(entry['best']), fmt(entry['mean']))
            self.gen += 1
            if self.gen >= self.generations:
                self.finished = True
                self.members = []
                break
            self._start_generation()

    # ---- protocol hooks ----
    @property
    def done(self) -> bool:
        return self.finished and not self.pending

    def observe(self, trial_id: int, metrics: dict) -> None:
        if isinstance(metrics, dict):
            for key in self.objectives:
                if key not in metrics:
                    raise StrategyError(f'metrics of trial {trial_id} lack the objective {key!r}: {metrics!r}')
        super().observe(trial_id, metrics)

    def _propose(self, trial_id: int) -> Proposal | None:
        if self.finished or not self.queue:
            return None
        arch = self.queue.pop(0)
        return Proposal(arch, init=dict(self.init), meta={'generation': self.gen})

    def _set(self, proposal: dict, objectives: list[float]) -> None:
        key = arch_key(proposal['architecture'])
        for m in self.members:
            if m['objectives'] is None and arch_key(m['architecture']) == key:
                m['objectives'] = objectives
                break
        self._maybe_advance()

    def _observe(self, trial_id: int, proposal: dict, metrics: dict) -> None:
        vals = []
        for key in self.objectives:
            v = metrics[key]
            v = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.inf
            vals.append(v if math.isfinite(v) else math.inf)
        self._set(proposal, vals)

    def _fail(self, trial_id: int, proposal: dict, reason: str | None) -> None:
        self._set(proposal, [math.inf] * len(self.objectives))

    def _state_dict(self) -> dict:
        def enc(ms):
            return [{'architecture': m['architecture'],
                     'objectives': None if m['objectives'] is None else [v if math.isfinite(v) else 'inf'
                                                                         for v in m['objectives']]} for m in ms]
        return {'gen': self.gen, 'population': enc(self.pop), 'members': enc(self.members), 'queue': self.queue,
                'log': self.log, 'finished': self.finished}

    def _load_state_dict(self, state: dict) -> None:
        def dec(ms):
            return [{'architecture': m['architecture'],
                     'objectives': None if m['objectives'] is None else [math.inf if v == 'inf' else float(v)
                                                                         for v in m['objectives']]} for m in ms]
        self.gen = state['gen']
        self.pop = dec(state['population'])
        self.members = dec(state['members'])
        self.queue = state['queue']
        self.log = state['log']
        self.finished = state['finished']

    def generation_log(self) -> list[dict]:
        """Per generation: evaluated, failed, new_survivors (paper Fig. 9), best and mean objective 0."""
        return [dict(e) for e in self.log]

