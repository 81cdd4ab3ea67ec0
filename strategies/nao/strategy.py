"""Strategy ``nao``: Neural Architecture Optimization over the ``nasnet_cells`` space.

Search loop (the NAO authors' code; docs/fidelity.md, NAO): evaluate ``seed_archs`` random cells (plus
any ``initial_dags`` pasted from papers); then ``iterations`` times: train the controller on every
evaluated architecture (targets min-max scaled), take the ``top_k`` best, step their per-step
encoder outputs along the predictor's gradient with λ = 1, 2, … until ``new_per_iteration``
decoded cells are new (never evaluated or pending), and propose those. The controller persists
across iterations, as in NAO. Before each training round the predictor's Kendall τ / Spearman ρ on
the architectures evaluated since the previous round (held out from its training) is logged.

Subclass hooks (XferNAS): :meth:`NAOStrategy._make_predictor` (the controller's predictor),
:meth:`NAOStrategy._training_set` (sequences, scaled targets, task ids), :meth:`NAOStrategy._seeds`
(start points of the gradient step) and :attr:`NAOStrategy.predictor_task` (task id optimised).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from nni_xfer.errors import ConfigError
from nni_xfer.registry import STRATEGIES
from nni_xfer.space import space_hook
from nni_xfer.store import arch_key
from nni_xfer.strategy import BaseStrategy, Proposal, SpaceInfo, check_int

from .model import NAOConfig, NAOController, minmax

log = logging.getLogger(__name__)

#: what NAO reads of the space's grammar (the ``grammar`` hook, nni_xfer/space.py: nasnet_cells's CellGrammar)
GRAMMAR_METHODS = ('from_info', 'validate', 'random_sample', 'to_tokens', 'from_tokens', 'is_valid_tokens',
                   'decode_masks', 'swap_branches', 'from_dags')


def rank_correlations(pred, truth) -> dict:
    """Kendall τ and Spearman ρ (scipy.stats) of predictions vs. observed scores."""
    from scipy.stats import kendalltau, spearmanr

    if len(pred) < 3 or np.ptp(truth) == 0 or np.ptp(pred) == 0:
        return {'kendall': None, 'spearman': None, 'n': len(pred)}
    return {'kendall': float(kendalltau(pred, truth)[0]), 'spearman': float(spearmanr(pred, truth)[0]),
            'n': len(pred)}


@STRATEGIES.register('nao', description='NAO: LSTM autoencoder + performance predictor, gradient steps in the '
                     'continuous architecture space (nasnet_cells)')
class NAOStrategy(BaseStrategy):
    """Args:
        space: a ``nasnet_cells`` space.
        seed_archs: random architectures evaluated before the first controller round (NAO: 600, the
            default).
        iterations: controller rounds after the seed set (0: random search only; NAO: 4, the default,
            so 600 + 4 x 100 = the paper's 1,000 architectures).
        new_per_iteration: new architectures proposed per round (NAO: 100, the default).
        top_k: best evaluated architectures used as start points of the gradient step (NAO: 100).
        initial_dags: cells in the XferNAS appendix's ``conv_dag``/``reduc_dag`` JSON (dicts or
            text) evaluated first, as part of the seed set.
        controller: :class:`~nni_xfer.strategies.nao.model.NAOConfig` fields (``epochs`` 1000,
            ``batch_size`` 100, ``lr`` 1e-3, ``trade_off`` 0.8, ``max_lambda`` 50, ...).
        fill_random: when the gradient step finds fewer new cells than wanted, propose random
            unseen ones for the rest (default off, as NAO: the round is just smaller).
        log_every: controller epochs between loss lines in the log (0: only the last).
    """

    #: tiny real run for the reliability tests (nni_xfer.testing.quick)
    #: (4 seed cells + 2 rounds x 2, short rounds filled at random: exactly the reliability tests' 8 trials)
    quick_config = {'space': 'nasnet_cells', 'space_args': {'B': 2, 'N': 1, 'F': 4, 'ops': 'nao_ws'},
                    'strategy_args': {'seed_archs': 4, 'iterations': 2, 'new_per_iteration': 2, 'top_k': 3,
                                      'fill_random': True,
                                      # trains enough for latent steps to decode new cells (3 epochs and
                                      # lambda <= 5: 3 of the 4 round proposals were random fill, seed 0)
                                      'controller': {'epochs': 30, 'batch_size': 8, 'embedding_size': 8,
                                                     'hidden_size': 16, 'max_lambda': 50}},
                    'stateful': True}

    #: task id passed to the predictor for the searched task (None: NAO's single task)
    predictor_task: int | None = None

    def __init__(self, space: SpaceInfo, seed: int = 0, mode: str = 'maximize', seed_archs: int = 600,
                 iterations: int = 4, new_per_iteration: int = 100, top_k: int = 100,
                 initial_dags: list | None = None, controller: dict | None = None, fill_random: bool = False,
                 log_every: int = 100):
        super().__init__(space, seed=seed, mode=mode)
        self.grammar = space_hook(space.name, 'grammar', needs=GRAMMAR_METHODS).from_info(space)
        self.seed_archs = check_int(seed_archs, 'strategy_args.seed_archs', minimum=1)
        self.iterations = check_int(iterations, 'strategy_args.iterations', minimum=0)
        self.new_per_iteration = check_int(new_per_iteration, 'strategy_args.new_per_iteration', minimum=1)
        self.top_k = check_int(top_k, 'strategy_args.top_k', minimum=1)
        self.log_every = check_int(log_every, 'strategy_args.log_every', minimum=0)
        if not isinstance(fill_random, bool):
            raise ConfigError('strategy_args.fill_random', f'expected true or false, got {fill_random!r}')
        self.fill_random = fill_random
        if controller is not None and not isinstance(controller, dict):
            raise ConfigError('strategy_args.controller', f'expected a mapping of controller options, got {controller!r}')
        self.controller_config = NAOConfig.from_kwargs('strategy_args.controller', **(controller or {}))
        if initial_dags is None:
            initial_dags = []
        if not isinstance(initial_dags, list):
            raise ConfigError('strategy_args.initial_dags', 'expected a list of conv_dag/reduc_dag documents')
        initial = [self.grammar.from_dags(d, field=f'strategy_args.initial_dags[{i}]')
                   for i, d in enumerate(initial_dags)]
        if len(initial) > self.seed_archs:
            raise ConfigError('strategy_args.initial_dags', f'{len(initial)} cells but seed_archs is {self.seed_archs}')

        self.iteration = 0          # 0: seed set; i: proposals of controller round i
        self.controller: NAOController | None = None
        self.trained_on: list[int] = []   # trial ids the controller has been trained on
        self.log: list[dict] = []
        self.queue: list[dict] = []
        keys: set[str] = set()
        for arch in initial:
            if arch_key(arch) not in keys:
                keys.add(arch_key(arch))
                self.queue.append({'architecture': arch, 'meta': {'role': 'initial_dag', 'iteration': 0}})
        for _ in range(100 * self.seed_archs):
            if len(self.queue) >= self.seed_archs:
                break
            arch = self.grammar.random_sample(self.rng)
            if arch_key(arch) not in keys:
                keys.add(arch_key(arch))
                self.queue.append({'architecture': arch, 'meta': {'role': 'seed', 'iteration': 0}})

    # ---- hooks for subclasses (XferNAS)
    def _make_predictor(self):
        """The controller's predictor: ``None`` for NAO's MLP, or a module / factory (see model.py)."""
        return None

    def _make_controller(self) -> NAOController:
        return NAOController(self.grammar, seed=self.seed, predictor=self._make_predictor(),
                             config=self.controller_config)

    def _evaluated(self) -> list[dict]:
        return [h for h in self.history if h['status'] == 'SUCCEEDED']

    def _training_set(self) -> tuple[list[list[int]], np.ndarray, list[int] | None]:
        """(sequences, targets scaled to [0, 1], task ids or None) the controller trains on."""
        done = self._evaluated()
        seqs = [self.grammar.to_tokens(h['architecture']) for h in done]
        return seqs, minmax([self.score(h['metrics']) for h in done]), None

    def _seeds(self) -> list[list[int]]:
        """Start points of the gradient step: the ``top_k`` best evaluated architectures."""
        done = sorted(self._evaluated(), key=lambda h: -self.score(h['metrics']))[:self.top_k]
        return [self.grammar.to_tokens(h['architecture']) for h in done]

    # ---- protocol
    @property
    def done(self) -> bool:
        return self.iteration >= self.iterations and not self.queue and not self.pending

    def _propose(self, trial_id: int) -> Proposal | None:
        if not self.queue and self.pending:
            return None  # NAO rounds are synchronous: wait for the round's results
        # a round whose steps decode no new cell is an empty round: go on to the next one, so that
        # returning None with nothing pending always means the search is done
        while not self.queue and self.iteration < self.iterations:
            self._next_round()
        while self.queue:
            item = self.queue.pop(0)
            if not self.seen(item['architecture']):
                return Proposal(item['architecture'], parent=item.get('parent'), meta=item['meta'])
        return None

    def _next_round(self) -> None:
        seqs, targets, tasks = self._training_set()
        if not seqs:
            # every seed failed: draw a fresh seed set instead of training on nothing
            self._fill(self.seed_archs, {'role': 'seed', 'iteration': self.iteration})
            return
        if self.controller is None:
            self.controller = self._make_controller()
        self.iteration += 1
        entry: dict[str, Any] = {'iteration': self.iteration, 'evaluated': len(seqs)}
        done = self._evaluated()
        held = [h for h in done if h['id'] not in set(self.trained_on)]
        if self.trained_on and held:
            pred = self.controller.predict([self.grammar.to_tokens(h['architecture']) for h in held],
                                           self.predictor_task)
            entry['held_out'] = rank_correlations(pred, np.array([self.score(h['metrics']) for h in held]))
        fit_seed = int(self.rng.integers(2 ** 31))
        hist = self.controller.fit(seqs, targets, tasks, seed=fit_seed, log_every=self.log_every)
        self.trained_on = [h['id'] for h in done]
        if hist:
            entry.update(hist[-1])
            entry['train'] = rank_correlations(self.controller.predict(seqs, self.predictor_task), targets)

        by_seq = {tuple(self.grammar.to_tokens(h['architecture'])): h['id'] for h in done}
        seeds = self._seeds()
        batch: set[str] = set()

        def is_new(seq: list[int]) -> bool:
            if not self.grammar.is_valid_tokens(seq):
                return False
            arch = self.grammar.from_tokens(seq)
            key = arch_key(arch)
            if self.seen(arch) or key in batch:
                return False
            batch.add(key)
            return True

        found = self.controller.generate(seeds, self.new_per_iteration, is_new, task=self.predictor_task)
        for d in found:
            parent = by_seq.get(tuple(seeds[d['parent']]))
            self.queue.append({'architecture': self.grammar.from_tokens(d['seq']), 'parent': parent,
                               'meta': {'role': 'nao', 'iteration': self.iteration, 'lambda': d['lam'],
                                        'pred_before': d['pred_before'], 'pred_after': d['pred_after']}})
        entry['new'] = len(found)
        entry['max_lambda_used'] = max((d['lam'] for d in found), default=None)
        if len(found) < self.new_per_iteration and self.fill_random:
            entry['random_fill'] = self._fill(self.new_per_iteration - len(found),
                                              {'role': 'random_fill', 'iteration': self.iteration}, batch)
        self.log.append(entry)
        ho = entry.get('held_out') or {}
        log.info('NAO round %d/%d: trained on %d archs (loss %s, mse %s, nll %s), held-out kendall %s '
                 'spearman %s (n=%s); %d new by gradient steps (max lambda %s)%s',
                 self.iteration, self.iterations, len(seqs), _f(entry.get('loss')), _f(entry.get('mse')),
                 _f(entry.get('nll')), _f(ho.get('kendall')), _f(ho.get('spearman')), ho.get('n', 0),
                 len(found), entry['max_lambda_used'],
                 f", {entry['random_fill']} random" if entry.get('random_fill') else '')

    def _fill(self, n: int, meta: dict, batch: set[str] | None = None) -> int:
        batch = set() if batch is None else batch
        added = 0
        for _ in range(100 * n):
            if added >= n:
                break
            arch = self.grammar.random_sample(self.rng)
            key = arch_key(arch)
            if not self.seen(arch) and key not in batch:
                batch.add(key)
                self.queue.append({'architecture': arch, 'meta': dict(meta)})
                added += 1
        return added

    # ---- state
    def _state_dict(self) -> dict:
        return {'iteration': self.iteration, 'queue': self.queue, 'trained_on': self.trained_on, 'log': self.log,
                'controller': None if self.controller is None else self.controller.state_dict()}

    def _load_state_dict(self, state: dict) -> None:
        self.iteration = state['iteration']
        self.queue = state['queue']
        self.trained_on = state['trained_on']
        self.log = state['log']
        self.controller = None
        if state['controller'] is not None:
            self.controller = self._make_controller()
            self.controller.load_state_dict(state['controller'])

    def round_log(self) -> list[dict]:
        """One entry per controller round: losses, held-out and training rank correlations, new cells."""
        return [dict(e) for e in self.log]


def _f(v) -> str:
    return 'n/a' if v is None else f'{v:.4f}'
