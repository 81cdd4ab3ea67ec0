"""Strategy ``eatnas``: EAT-NAS tournament evolution (Algorithm 1) with elastic transfer.

- Population P (64) and sample S (16). The initial population is P random architectures within
  the space's constraints (search from scratch) or, with ``seed_from``, P offspring of the basic
  architecture made by the space's transformation function (Algorithm 3, elastic transfer), whose
  weights optionally start from the basic model's checkpoint. The basic architecture need only use
  the space's choices: searched under the small task's scale constraints, it may lie outside this
  task's; its offspring lie inside them (paper §4.2: CIFAR-10 expansion [4, 10] seeds ImageNet's
  [8, 16]).
- Each cycle: draw S members, mutate the best (the same transformation function), train the child
  and add it; drop the worst of the sample. With trialConcurrency > 1 children are proposed while
  others train; a child's arrival removes the worst member of *its* sample still present (else the
  worst of a fresh sample), so results may arrive in any order.
- Score (Eq. 1): ``acc × (sub / target) ** w``, w = ``alpha`` below the target, ``beta`` above;
  ``sub_objective``: ``params``, ``mult_adds`` (= FLOPs / 2, the paper's ImageNet target 500M) or
  ``flops``; ``null`` scores accuracy alone.
- Population quality (Eq. 3): ``Q = mean_acc × (std / target_std) ** w`` (``q_alpha``, ``q_beta``,
  paper −0.07). The search stops when Q has not improved for ``patience`` cycles, or on the budget;
  the best-quality population is kept (it seeds transfer and retraining).
- Every child starts from its parent's checkpoint through ``eatnas_share`` (``share``), so the
  trial reports ``inherited_acc`` and ``shared_fraction``.
- Per cycle: mean accuracy, std and Q (paper Fig. 4) in ``state['cycles']`` and on the history
  entry of the trial that closed the cycle (``population``); logged per cycle.

The architecture grammar, constraints and operators belong to the space: its ``grammar`` hook
(nni_xfer/space.py; ``mbv2_blocks``'s ``Grammar``) gives ``from_info``, ``parse``, ``random`` and
``transform`` (optional: ``violation``).
"""
from __future__ import annotations

import copy
import inspect
import logging

import numpy as np

from nni_xfer.errors import ConfigError
from nni_xfer.evolution import Mutation, mean_std, soft_constraint, tournament
from nni_xfer.registry import STRATEGIES
from nni_xfer.space import space_hook
from nni_xfer.strategy import BaseStrategy, Proposal, SpaceInfo, StrategyContext, check_int

from .seed import resolve_seed

_logger = logging.getLogger('nni_xfer.eatnas')

SUB_OBJECTIVES = ('params', 'mult_adds', 'flops')
#: what eatnas reads of the space's grammar (the ``grammar`` hook of nni_xfer/space.py)
GRAMMAR_METHODS = ('from_info', 'parse', 'random', 'transform')


def _number(value, field: str, positive: bool = False) -> float:
    from nni_xfer.config import check_number  # the one validator of config numbers (finite)
    return check_number(value, field, above=0 if positive else None)


def sub_value(metrics: dict, sub_objective: str | None) -> float | None:
    """The sub-objective of a trial's metrics (``mult_adds`` from ``flops`` / 2)."""
    if sub_objective is None:
        return None
    if sub_objective == 'mult_adds':
        v = metrics.get('mult_adds', None if metrics.get('flops') is None else metrics['flops'] / 2)
    else:
        v = metrics.get(sub_objective)
    return None if v is None else float(v)


@STRATEGIES.register('eatnas', description='EAT-NAS: tournament evolution with parameter sharing and elastic '
                                           'transfer from a small-task search')
class EATNASStrategy(BaseStrategy):
    """EAT-NAS search (Fang et al. 2019); see the module docstring.

    Args:
        population: P, the population size (paper 64).
        sample: S, the tournament sample size (paper 16); at most ``population``.
        sub_objective: ``params`` | ``mult_adds`` | ``flops`` | ``null`` (Eq. 1's obj_sub).
        target: Eq. 1's target (paper 3.0M params on CIFAR-10, 500M mult-adds on ImageNet).
        alpha, beta: Eq. 1/2 exponents below / above the target.
        target_std, q_alpha, q_beta: Eq. 3 (population quality).
        patience: stop after this many cycles without a better Q (``null``: budget only).
        min_delta: Q must grow by more than this to count as better.
        max_cycles: stop after this many mutation cycles (``null``: budget only).
        share: children start from the parent's checkpoint (``eatnas_share``); false: fresh.
        depth_extra, kernel_mismatch, widen: options of ``eatnas_share`` (see nni_xfer/transfer/sharing.py);
            ``widen: zero`` (not the paper's) makes width increases function-preserving.
        seed_from: the elastic-transfer seed (see strategies/eatnas/seed.py); ``null``: from scratch.
        context: set from ``classArgs`` (not a ``strategy_args`` key): ``seed_from.store`` defaults to
            the experiment's own ``classArgs.store``.
    """

    #: tiny real run for the reliability tests (nni_xfer.testing.quick)
    quick_config = {'space': 'mbv2_blocks', 'space_args': {'stem_channels': 8, 'head_channels': 32},
                    'strategy_args': {'population': 3, 'sample': 2, 'patience': None}, 'stateful': True}

    def __init__(self, space: SpaceInfo, seed: int = 0, mode: str = 'maximize', population: int = 64,
                 sample: int = 16, sub_objective: str | None = 'params', target: float = 3.0e6,
                 alpha: float = -0.07, beta: float = -0.07, target_std: float = 0.01, q_alpha: float = -0.07,
                 q_beta: float = -0.07, patience: int | None = 50, min_delta: float = 0.0,
                 max_cycles: int | None = None, share: bool = True, depth_extra: str = 'random',
                 kernel_mismatch: str = 'none', widen: str = 'random', seed_from: dict | None = None,
                 context: StrategyContext | None = None):
        super().__init__(space, seed=seed, mode=mode)
        if mode != 'maximize':
            raise ConfigError('mode', 'eatnas maximizes accuracy x size term', allowed=['maximize'])
        self.grammar = space_hook(space.name, 'grammar', needs=GRAMMAR_METHODS).from_info(space)
        self.P = check_int(population, 'strategy_args.population', minimum=2)
        self.S = check_int(sample, 'strategy_args.sample', minimum=2)
        if self.S > self.P:
            raise ConfigError('strategy_args.sample', f'S={self.S} exceeds the population P={self.P}')
        if sub_objective is not None and sub_objective not in SUB_OBJECTIVES:
            raise ConfigError('strategy_args.sub_objective', f'unknown value {sub_objective!r}',
                              allowed=[*SUB_OBJECTIVES, None])
        self.sub_objective = sub_objective
        self.target = _number(target, 'strategy_args.target', positive=True)
        self.alpha = _number(alpha, 'strategy_args.alpha')
        self.beta = _number(beta, 'strategy_args.beta')
        self.target_std = _number(target_std, 'strategy_args.target_std', positive=True)
        self.q_alpha = _number(q_alpha, 'strategy_args.q_alpha')
        self.q_beta = _number(q_beta, 'strategy_args.q_beta')
        self.patience = check_int(patience, 'strategy_args.patience', minimum=1, allow_none=True)
        self.min_delta = _number(min_delta, 'strategy_args.min_delta')
        self.max_cycles = check_int(max_cycles, 'strategy_args.max_cycles', minimum=0, allow_none=True)
        if not isinstance(share, bool):
            raise ConfigError('strategy_args.share', f'expected true/false, got {share!r}')
        self.share = share
        from nni_xfer.transfer.sharing import DEPTH_EXTRA, KERNEL_MISMATCH, WIDEN
        if depth_extra not in DEPTH_EXTRA:
            raise ConfigError('strategy_args.depth_extra', f'unknown value {depth_extra!r}', allowed=DEPTH_EXTRA)
        if kernel_mismatch not in KERNEL_MISMATCH:
            raise ConfigError('strategy_args.kernel_mismatch', f'unknown value {kernel_mismatch!r}',
                              allowed=KERNEL_MISMATCH)
        if widen not in WIDEN:
            raise ConfigError('strategy_args.widen', f'unknown value {widen!r}', allowed=WIDEN)
        self.depth_extra, self.kernel_mismatch, self.widen = depth_extra, kernel_mismatch, widen
        self.context = context or StrategyContext()
        self.seed_info = resolve_seed(seed_from, space.name, self.grammar, self._parse_seed,
                                      default_store=self.context.store)
        if self.seed_info is not None:
            self._check_seed(self.seed_info['architecture'])
        # search state (all JSON-safe; round-trips through state_dict)
        self.population: list[dict] = []     # members: id, architecture, acc, sub, score, checkpoint, sha256
        self.init_done = 0                   # successful initial members
        self.samples: dict[int, list[int]] = {}  # pending child id -> ids of its tournament sample
        self.cycles: list[dict] = []         # per cycle: cycle, trial, mean_acc, std_acc, Q, ...
        self.best_q: float | None = None
        self.best_population: list[dict] = []
        self.stale = 0                       # cycles since Q last improved
        if self.seed_info is not None:
            src = self.seed_info['source']
            _logger.info('eatnas: elastic transfer from %s (basic acc %s), weights %s',
                         'an explicit architecture' if src is None else f"experiment {src['experiment_id']} "
                         f"proposal {src['proposal_id']}", self.seed_info['acc'],
                         'shared' if self.seed_info['checkpoint'] else 'fresh')

    def _parse_seed(self, arch, grammar, field: str) -> dict:
        """The basic architecture against the space's choices but not its scale constraints: it was
        searched under the small task's constraints; its offspring obey this task's (paper §3.5)."""
        if 'constraints' in inspect.signature(grammar.parse).parameters:
            return grammar.parse(arch, field, constraints=False)
        return grammar.parse(arch, field)

    def _check_seed(self, arch: dict) -> None:
        """Fail before any trial when no offspring of the basic architecture can satisfy the constraints."""
        try:
            self.grammar.transform(arch, np.random.default_rng(0))
        except ConfigError as e:
            raise ConfigError('strategy_args.seed_from.architecture.blocks', e.message) from None
        why = getattr(self.grammar, 'violation', lambda a: None)(arch)
        if why:
            _logger.info('eatnas: the basic architecture lies outside this task\'s constraints (%s); its '
                         'offspring are drawn inside them', why)

    # ---- scores ----
    def objective(self, metrics: dict) -> float:
        """Eq. 1: acc × [sub / target] ** w."""
        acc = float(metrics['default'])
        sub = sub_value(metrics, self.sub_objective)
        if sub is None:
            return acc
        return acc * soft_constraint(sub, self.target, self.alpha, self.beta)

    def score(self, metrics: dict) -> float:  # best() ranks by Eq. 1
        return self.objective(metrics)

    def quality(self, accs: list[float]) -> tuple[float, float, float]:
        """(mean, std, Q) of a population's accuracies (Eq. 3)."""
        m, s = mean_std(accs)
        return m, s, m * soft_constraint(max(s, 1e-6), self.target_std, self.q_alpha, self.q_beta)

    # ---- protocol ----
    @property
    def done(self) -> bool:
        if self.init_done < self.P:
            return False
        if self.max_cycles is not None and len(self.cycles) - 1 >= self.max_cycles:
            return True
        return self.patience is not None and self.stale >= self.patience

    def _init_in_flight(self) -> int:
        return sum(1 for p in self.pending.values() if p['meta'].get('role') == 'init')

    def _propose(self, trial_id: int) -> Proposal | None:
        if self.done:
            return None
        if self.init_done + self._init_in_flight() < self.P:
            return self._propose_initial()
        if self.init_done < self.P:
            return None  # Algorithm 1: the whole initial population is trained before evolving
        return self._propose_child(trial_id)

    def _propose_initial(self) -> Proposal | None:
        seed = self.seed_info
        if seed is None:
            for _ in range(1000):
                arch = self.grammar.random(self.rng)
                if not self.seen(arch):
                    return Proposal(arch, meta={'role': 'init'})
            return None
        gen = Mutation(lambda a, rng: self.grammar.transform(a, rng), accept=lambda a: not self.seen(a),
                       max_tries=1000)
        arch = gen.do(self.rng, seed['architecture'])
        if arch is None:
            return None
        init = {'kind': 'fresh'}
        if seed['checkpoint'] and self.share:
            init = self._share_init(seed['checkpoint'], seed['sha256'], seed['architecture'])
            if seed['source'] is not None:
                init['parent'] = dict(seed['source'])
        return Proposal(arch, init=init, meta={'role': 'init', 'transfer': True})

    def _share_init(self, uri: str, sha: str | None, parent_arch: dict) -> dict:
        init = {'kind': 'eatnas_share', 'uri': uri, 'parent_architecture': parent_arch,
                'depth_extra': self.depth_extra, 'kernel_mismatch': self.kernel_mismatch}
        if self.widen != 'random':   # the paper's default is left out of the spec (specs of older runs match)
            init['widen'] = self.widen
        if sha:
            init['sha256'] = sha
        return init

    def _propose_child(self, trial_id: int) -> Proposal | None:
        mutation = Mutation(lambda a, rng: self.grammar.transform(a, rng),
                            accept=lambda a: not self.seen(a), max_tries=100)
        for _ in range(10):
            t = tournament(self.rng, self.population, self.S, key=lambda m: m['score'])
            child = mutation.do(self.rng, t.best['architecture'])
            if child is None:
                continue
            self.samples[trial_id] = [m['id'] for m in t.sample]
            init = {'kind': 'fresh'}
            if self.share and t.best.get('checkpoint'):
                init = self._share_init(t.best['checkpoint'], t.best.get('sha256'), t.best['architecture'])
            return Proposal(child, init=init, parent=t.best['id'], meta={'role': 'child'})
        return None

    def _member(self, trial_id: int, proposal: dict, metrics: dict) -> dict:
        return {'id': trial_id, 'architecture': proposal['architecture'], 'acc': float(metrics['default']),
                'sub': sub_value(metrics, self.sub_objective), 'score': self.objective(metrics),
                'checkpoint': metrics.get('checkpoint'), 'sha256': metrics.get('sha256')}

    def _observe(self, trial_id: int, proposal: dict, metrics: dict) -> None:
        member = self._member(trial_id, proposal, metrics)
        if proposal['meta'].get('role') == 'init':
            self.population.append(member)
            self.init_done += 1
            if self.init_done == self.P:
                self._close_cycle(trial_id)
            return
        sample_ids = self.samples.pop(trial_id, [])
        present = [m for m in self.population if m['id'] in sample_ids]
        if not present:
            present = tournament(self.rng, self.population, self.S, key=lambda m: m['score']).sample
        worst = min(present, key=lambda m: m['score'])
        self.population = [m for m in self.population if m['id'] != worst['id']]
        self.population.append(member)
        self._close_cycle(trial_id, removed=worst['id'])

    def _fail(self, trial_id: int, proposal: dict, reason: str | None) -> None:
        self.samples.pop(trial_id, None)

    def _close_cycle(self, trial_id: int, removed: int | None = None) -> None:
        accs = [m['acc'] for m in self.population]
        mean, std, q = self.quality(accs)
        subs = [m['sub'] for m in self.population if m['sub'] is not None]
        rec = {'cycle': len(self.cycles), 'trial': trial_id, 'mean_acc': mean, 'std_acc': std, 'Q': q,
               'mean_sub': sum(subs) / len(subs) if subs else None,
               'best_score': max(m['score'] for m in self.population), 'removed': removed}
        if self.best_q is None or q > self.best_q + self.min_delta:
            self.best_q = q
            self.best_population = copy.deepcopy(self.population)
            self.stale = 0
        else:
            self.stale += 1
        rec['stale'] = self.stale
        self.cycles.append(rec)
        if self.history and self.history[-1]['id'] == trial_id:
            self.history[-1]['population'] = rec
        _logger.info('eatnas cycle %d (trial %d): mean acc %.4f, std %.4f, Q %.4f, best score %.4f%s',
                     rec['cycle'], trial_id, mean, std, q, rec['best_score'],
                     f', Q flat for {self.stale}' if self.stale else ', best Q so far')

    # ---- state ----
    def _state_dict(self) -> dict:
        return {'population': self.population, 'init_done': self.init_done,
                'samples': {str(k): v for k, v in self.samples.items()}, 'cycles': self.cycles,
                'best_q': self.best_q, 'best_population': self.best_population, 'stale': self.stale,
                'seed_info': self.seed_info}

    def _load_state_dict(self, state: dict) -> None:
        self.population = state['population']
        self.init_done = state['init_done']
        self.samples = {int(k): v for k, v in state['samples'].items()}
        self.cycles = state['cycles']
        self.best_q = state['best_q']
        self.best_population = state['best_population']
        self.stale = state['stale']
        self.seed_info = state['seed_info']

