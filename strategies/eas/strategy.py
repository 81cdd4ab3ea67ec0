"""EAS (Cai et al., AAAI 2018): episodes of Net2Wider/Net2Deeper transformations of a start network.

Search flow (the paper's, details in docs/fidelity.md, EAS): the start network is trained from scratch once; every episode
samples ``networks_per_episode`` children, each a fresh copy of the start network transformed by
``wider_steps`` Net2Wider then ``deeper_steps`` Net2Deeper actions; children train from the
start network's weights (``net2net`` initializer) and their validation accuracy is the reward.
A cache keyed by architecture avoids training the same child twice. After
``episodes_per_stage`` episodes the stage's best network is trained ``stage_epochs`` more epochs
(from its own weights) and becomes the next stage's start point. ``episodes_per_stage`` is one
budget for each of ``stages`` stages, or a list of per-stage budgets (paper C10+: ``[30, 15]``
episodes of 10 networks = 300 then 150 networks, the stage best trained 100 epochs in between).
The paper's last step — the top networks of the last stage trained for the full schedule on the
whole training set — is a separate experiment written by ``nni-xfer eas finalize``
(:mod:`.finalize`).

``eas_random`` draws the actions at random (paper Fig. 5 baseline), wider and deeper steps in a
random order per episode (``action_order``); ``eas`` draws them from the RL meta-controller and
updates it with REINFORCE after each episode.

Space-specific options (``strategy_args``; rejected for a space they do not apply to):
``dense_deeper`` (``eas_densenet``: ``duplicate`` | ``eq5``, the Net2Deeper scheme) and ``fc_block``
(``eas_plain_cnn``: ``code`` | ``paper``, whether a new FC may always go right after the global pool).

Spaces: any space whose class has ``eas_operators`` (the space's own grammar: start point, tokens,
decisions -> ops, ops -> child): ``eas_plain_cnn`` (default 4 wider + 5 deeper steps; ops of
:func:`nni_xfer.search_spaces.eas_plain_cnn.transform_tokens`) and ``eas_densenet`` (default
10 wider + 5 deeper steps). DenseNet ops are those of
:func:`nni_xfer.search_spaces.eas_densenet.transform_densenet_arch`: a wider step
gives ``{'op': 'wider', 'block', 'layer', 'growth'}`` per chosen layer (one step up the growth
list), a deeper step ``{'op': 'deeper', 'block', 'layer'}`` (duplicate the layer; ``'scheme': 'eq5'``
with ``dense_deeper: eq5``); after the
steps every DenseNet child gets the episode-end rule of :func:`densenet_finish_ops` (stem to
``int(2 × mean growth)``, each transition to ``int(0.5 × its input channels)``, only where
larger) — fixed rules, not controller decisions.
"""
from __future__ import annotations

import copy
from typing import Any

from nni_xfer.errors import ConfigError
from nni_xfer.registry import STRATEGIES
from nni_xfer.space import space_hook
from nni_xfer.store import arch_key
from nni_xfer.strategy import BaseStrategy, Proposal, SpaceInfo, check_int


def eas_operators(space: SpaceInfo, options: dict | None = None):
    """The space's EAS operators (its ``eas_operators`` hook, :mod:`nni_xfer.space`), bound to ``space``.

    ``options``: space-specific strategy arguments (``None`` = not given); each must be one the
    operators declare in their ``options`` table (``dense_deeper`` for DenseNet, ``fc_block`` for
    the plain CNN), else a :class:`ConfigError` naming ``strategy_args.<name>``.
    """
    ops = space_hook(space.name, 'eas_operators')
    given = {k: v for k, v in (options or {}).items() if v is not None}
    known = getattr(ops, 'options', {})
    for key in given:
        if key not in known:
            raise ConfigError(f'strategy_args.{key}', f'has no effect with space {space.name!r}')
    return ops(space, **given)


class RandomPolicy:
    """Uniform random actions (the paper's random-transformation baseline).

    Wider: every widenable layer independently with probability 1/2; deeper: the space's uniform
    random deeper action (a uniform non-empty block, a uniform layer in it, and for plain CNNs a
    uniform kernel). The order of the wider and deeper steps is the strategy's ``action_order``.
    """

    def __init__(self, ops, rng):
        self.ops, self.rng = ops, rng

    def wider(self, tokens: list[str]) -> tuple[list[dict], Any]:
        decisions = [0] * len(tokens)
        for i in self.ops.widenable(tokens):
            if self.rng.random() < 0.5:
                decisions[i] = 1
        return self.ops.wider_ops(tokens, decisions), None

    def deeper(self, tokens: list[str]) -> tuple[list[dict], Any]:
        ops, _ = self.ops.random_deeper(tokens, self.rng)
        return ops, None

    def update(self, trajectories: list, accuracies: list[float]) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class _EASBase(BaseStrategy):
    policy_cls: type = RandomPolicy

    def __init__(self, space: SpaceInfo, seed: int = 0, mode: str = 'maximize',
                 episodes_per_stage: int | list[int] = 30, networks_per_episode: int = 10,
                 wider_steps: int | None = None, deeper_steps: int | None = None, stages: int = 1,
                 stage_epochs: int | None = None, noise: bool = True, dense_deeper: str | None = None,
                 fc_block: str | None = None):
        super().__init__(space, seed=seed, mode=mode)
        self.adapter = eas_operators(space, {'dense_deeper': dense_deeper, 'fc_block': fc_block})
        if mode != 'maximize':
            raise ConfigError('mode', 'EAS maximises validation accuracy', allowed=['maximize'])
        # per-stage budgets (paper C10+: 300 then 150 networks = [30, 15] episodes of 10); an int is the
        # same budget for each of `stages` stages
        if isinstance(episodes_per_stage, (list, tuple)):
            if not episodes_per_stage:
                raise ConfigError('strategy_args.episodes_per_stage', 'expected a positive integer or a non-empty list')
            budgets = [check_int(e, f'strategy_args.episodes_per_stage[{i}]', 1)
                       for i, e in enumerate(episodes_per_stage)]
            if stages not in (1, len(budgets)):
                raise ConfigError('strategy_args.stages', f'{stages!r} contradicts episodes_per_stage '
                                  f'(a list of {len(budgets)} stage budgets); leave stages out')
            stages = len(budgets)
        else:
            budgets = [check_int(episodes_per_stage, 'strategy_args.episodes_per_stage', 1)]
        self.episodes_per_stage = budgets[0] if len(budgets) == 1 else list(budgets)
        self.stage_budgets = budgets
        self.networks_per_episode = check_int(networks_per_episode, 'strategy_args.networks_per_episode', 1)
        # defaults per space (the paper's settings): plain CNN 4 + 5, DenseNet 10 + 5
        dw, dd = self.adapter.default_steps
        self.wider_steps = check_int(dw if wider_steps is None else wider_steps, 'strategy_args.wider_steps', 0)
        self.deeper_steps = check_int(dd if deeper_steps is None else deeper_steps, 'strategy_args.deeper_steps', 0)
        self.stages = check_int(stages, 'strategy_args.stages', 1)
        if len(self.stage_budgets) == 1:
            self.stage_budgets = self.stage_budgets * self.stages
        self.stage_epochs = check_int(stage_epochs, 'strategy_args.stage_epochs', 1, allow_none=True)
        if self.stage_epochs is not None and self.stages == 1:
            raise ConfigError('strategy_args.stage_epochs', 'has no effect with one stage (it trains the stage best '
                              'before the next stage); the final training is `nni-xfer eas finalize`')
        if not isinstance(noise, bool):
            raise ConfigError('strategy_args.noise', f'expected true/false, got {noise!r}')
        self.noise = noise
        self.policy = self._make_policy()
        self.st: dict[str, Any] = {
            'stage': 0, 'episode': 0, 'phase': 'start',   # start | episode | retrain | done
            'start': self.adapter.start(), 'start_id': None, 'start_ckpt': None,
            'batch': [],          # children of the current episode: {architecture, ops, id, acc, traj}
            'cache': {},          # arch key -> accuracy
            'stage_best': None,   # {'id', 'architecture', 'acc', 'checkpoint', 'sha256'}
            'log': [],            # per-episode stats
            'order': None,        # this episode's step order (interleaved random order of eas_random)
        }

    def _make_policy(self):
        return self.policy_cls(self.adapter, self.rng)

    @classmethod
    def contract_case(cls):
        """Quick mock case for the shared contract suite (plain-CNN space, small episodes)."""
        import math

        from nni_xfer.testing.strategy_contract import ContractCase
        start = ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'fc-64']
        space = SpaceInfo('eas_plain_cnn', {}, {}, extra={
            'kind': 'eas_plain_cnn', 'start': {'layers': start}, 'conv_widths': [16, 32, 64, 96, 128],
            'kernels': [1, 3, 5], 'fc_units': [64, 128, 256]})

        def metrics(strategy, architecture):  # more capacity scores higher, saturating below 1
            cap = sum(int(t.split('-')[1]) for t in architecture['layers'] if t != 'pool')
            acc = 1 - math.exp(-cap / 400)
            return {'default': acc, 'val_acc': acc, 'checkpoint': f'/ckpt/{cap}.pt', 'sha256': '0' * 64}
        return ContractCase(space, {'networks_per_episode': 4, 'wider_steps': 2, 'deeper_steps': 2,
                                    'episodes_per_stage': 50}, metrics, budget=14)

    @property
    def done(self) -> bool:
        return self.st['phase'] == 'done'

    # ---- proposing ----
    def _propose(self, trial_id: int) -> Proposal | None:
        while True:
            st = self.st
            if st['phase'] in ('start', 'retrain'):
                return self._propose_start(trial_id)
            if st['phase'] != 'episode':
                return None
            if len(st['batch']) >= self.networks_per_episode:
                if not self._maybe_finish_episode():
                    return None  # waiting for this episode's results
                continue  # an episode served wholly from the cache: go on with the next
            child = self._sample_child()
            st['batch'].append(child)
            key = arch_key(child['architecture'])
            if key in st['cache']:
                child['acc'] = st['cache'][key]  # trained before: reuse, never train twice
                continue
            twin = next((c for c in st['batch'][:-1] if c['architecture'] == child['architecture']
                         and c['id'] is not None and c['acc'] is None), None)
            if twin is not None:
                child['same_as'] = twin['id']  # same child twice in one episode: train it once
                continue
            child['id'] = trial_id
            return Proposal(copy.deepcopy(child['architecture']), parent=st['start_id'],
                            init={'kind': 'net2net', 'uri': st['start_ckpt']['checkpoint'],
                                  'sha256': st['start_ckpt']['sha256'], 'ops': child['ops'], 'noise': self.noise},
                            meta={'role': 'child', 'stage': st['stage'], 'episode': st['episode']})

    def _propose_start(self, trial_id: int) -> Proposal | None:
        st = self.st
        if st['start_id'] is not None:
            return None  # waiting for the start point
        st['start_id'] = trial_id
        if st['phase'] == 'start':
            return Proposal(dict(st['start']), init={'kind': 'fresh'}, meta={'role': 'start', 'stage': st['stage']})
        best = st['stage_best']
        meta: dict = {'role': 'stage_best', 'stage': st['stage']}
        if self.stage_epochs:
            meta['evaluator_args'] = {'epochs': self.stage_epochs}
        return Proposal(copy.deepcopy(best['architecture']), parent=best['id'], meta=meta,
                        init={'kind': 'checkpoint', 'uri': best['checkpoint'], 'sha256': best['sha256']})

    def _step_order(self) -> list[str]:
        """The episode's wider/deeper step kinds: all wider steps, then all deeper steps."""
        return ['wider'] * self.wider_steps + ['deeper'] * self.deeper_steps

    def _sample_child(self) -> dict:
        """The episode's steps in :meth:`_step_order` (the policy reads the re-encoded network
        before each), then the space's episode-end ops (DenseNet stem/transition widening)."""
        arch = copy.deepcopy(self.st['start'])
        ops: list[dict] = []
        traj: list = []
        for kind in self._step_order():
            tokens = self.adapter.tokens(arch)
            step_ops, record = getattr(self.policy, kind)(tokens)
            traj.append((kind, list(tokens), record))
            arch = self.adapter.apply(arch, step_ops)
            ops.extend(step_ops)
        end_ops = self.adapter.finish(arch)
        arch = self.adapter.apply(arch, end_ops)
        ops.extend(end_ops)
        return {'architecture': arch, 'ops': ops, 'id': None, 'acc': None, 'traj': traj}

    # ---- observing ----
    def _observe(self, trial_id: int, proposal: dict, metrics: dict) -> None:
        self._record(trial_id, proposal, float(metrics.get('val_acc', metrics['default'])), metrics)

    def _fail(self, trial_id: int, proposal: dict, reason: str | None) -> None:
        self._record(trial_id, proposal, 0.0, None)

    def _record(self, trial_id: int, proposal: dict, acc: float, metrics: dict | None) -> None:
        st = self.st
        role = proposal['meta'].get('role')
        if role in ('start', 'stage_best'):
            if metrics is None:  # the start point must train; try again
                st['start_id'] = None
                return
            st['start_ckpt'] = {'checkpoint': metrics['checkpoint'], 'sha256': metrics['sha256'], 'acc': acc}
            st['start'] = proposal['architecture']
            self._consider_best(trial_id, proposal['architecture'], acc, metrics)
            st['phase'] = 'episode'
            st['stage_best'] = None if role == 'stage_best' else st['stage_best']
            if role == 'stage_best':
                self._consider_best(trial_id, proposal['architecture'], acc, metrics)
            return
        key = arch_key(proposal['architecture'])
        if metrics is not None:
            st['cache'][key] = acc
            self._consider_best(trial_id, proposal['architecture'], acc, metrics)
        for child in st['batch']:
            if child.get('id') == trial_id or child.get('same_as') == trial_id:
                child['acc'] = acc
        self._maybe_finish_episode()

    def _consider_best(self, trial_id, architecture, acc, metrics) -> None:
        best = self.st['stage_best']
        if best is None or acc > best['acc']:
            self.st['stage_best'] = {'id': trial_id, 'architecture': copy.deepcopy(architecture), 'acc': acc,
                                     'checkpoint': metrics['checkpoint'], 'sha256': metrics['sha256']}

    def _maybe_finish_episode(self) -> bool:
        st = self.st
        batch = st['batch']
        if st['phase'] != 'episode' or len(batch) < self.networks_per_episode or any(c['acc'] is None for c in batch):
            return False
        accs = [c['acc'] for c in batch]
        stats = self.policy.update([c['traj'] for c in batch], accs)
        st['log'].append({'stage': st['stage'], 'episode': st['episode'], 'best': max(accs),
                          'mean': sum(accs) / len(accs), **{k: float(v) for k, v in (stats or {}).items()}})
        st['batch'] = []
        st['order'] = None
        st['episode'] += 1
        if st['episode'] == sum(self.stage_budgets[:st['stage'] + 1]):  # this stage's budget is spent
            st['stage'] += 1
            if st['stage'] >= self.stages:
                st['phase'] = 'done'
            else:
                st['phase'] = 'retrain'
                st['start_id'] = None
        return True

    # ---- state ----
    def _state_dict(self) -> dict:
        st = dict(self.st)
        st['batch'] = [{k: v for k, v in c.items() if k != 'traj'} | {'traj': _jsonable(c['traj'])}
                       for c in self.st['batch']]
        return {'st': st, 'policy': self.policy.state_dict()}

    def _load_state_dict(self, state: dict) -> None:
        self.st = state['st']
        self.st.setdefault('order', None)  # states saved before the interleaved random order
        # states saved before DenseNet support kept plain-CNN token lists under 'tokens'/'layers'
        for child in self.st['batch']:
            if 'architecture' not in child:
                child['architecture'] = {'layers': child.pop('tokens')}
        best = self.st.get('stage_best')
        if best is not None and 'architecture' not in best:
            best['architecture'] = {'layers': best.pop('layers')}
        self.policy.load_state_dict(state['policy'])

    def episode_log(self) -> list[dict]:
        return list(self.st['log'])


def _jsonable(traj: list) -> list:
    return [[kind, tokens, record] for kind, tokens, record in traj]


ACTION_ORDERS = ('interleaved', 'sequential')


@STRATEGIES.register('eas_random', description='EAS random-transformation baseline (paper Fig. 5)')
class EASRandomStrategy(_EASBase):
    """EAS with uniformly random Net2Wider/Net2Deeper actions; same budget knobs as ``eas``.

    ``action_order: interleaved`` (default, the authors' code): the ``wider_steps`` wider and
    ``deeper_steps`` deeper actions come in a random order, drawn once per episode and shared by
    its networks — each next step is a wider one with probability (wider steps left) / (steps
    left), i.e. a uniformly random arrangement. ``sequential``: all wider steps, then all deeper
    steps (as the RL controller acts).
    """

    #: proposals do not depend on results (the shared contract checks it both ways)
    uses_scores = False

    def __init__(self, space: SpaceInfo, seed: int = 0, mode: str = 'maximize',
                 episodes_per_stage: int | list[int] = 30, networks_per_episode: int = 10,
                 wider_steps: int | None = None, deeper_steps: int | None = None, stages: int = 1,
                 stage_epochs: int | None = None, noise: bool = True, dense_deeper: str | None = None,
                 fc_block: str | None = None, action_order: str = 'interleaved'):
        if action_order not in ACTION_ORDERS:
            raise ConfigError('strategy_args.action_order', f'{action_order!r} is not an action order',
                              allowed=list(ACTION_ORDERS))
        self.action_order = action_order
        super().__init__(space, seed=seed, mode=mode, episodes_per_stage=episodes_per_stage,
                         networks_per_episode=networks_per_episode, wider_steps=wider_steps,
                         deeper_steps=deeper_steps, stages=stages, stage_epochs=stage_epochs, noise=noise,
                         dense_deeper=dense_deeper, fc_block=fc_block)

    def _step_order(self) -> list[str]:
        if self.action_order == 'sequential':
            return super()._step_order()
        if self.st.get('order') is None:  # the episode's first network draws the order
            wider, deeper, order = self.wider_steps, self.deeper_steps, []
            while wider or deeper:
                if self.rng.random() < wider / (wider + deeper):
                    order.append('wider')
                    wider -= 1
                else:
                    order.append('deeper')
                    deeper -= 1
            self.st['order'] = order
        return list(self.st['order'])

    #: tiny real run for the reliability tests (nni_xfer.testing.quick)
    quick_config = {'space': 'eas_plain_cnn', 'space_args': {'start': ['conv-16-3', 'pool', 'conv-16-3', 'pool', 'fc-64']},
                    'strategy_args': {'episodes_per_stage': 10, 'networks_per_episode': 2, 'wider_steps': 1,
                                      'deeper_steps': 1}}


class RLPolicy:
    """The EAS meta-controller (bi-LSTM encoder, wider and deeper actors, REINFORCE) over the
    space's token grammar (its EAS operators), the padding length raised to ``max_tokens`` when the
    search can grow networks beyond the grammar's ``max_len``. Recorded deeper decisions are
    ``[block, layer, kernel]`` (plain CNN) or ``[block, layer]`` (no kernel decision, DenseNet).
    """

    def __init__(self, ops, rng, seed: int = 0, lr: float = 2e-3, max_tokens: int = 0, baseline: str = 'code',
                 baseline_decay: float = 0.95):
        import torch

        from nni_xfer.strategies.eas.controller import Controller
        self.ops = ops  # the space's EAS operators are the controller's token grammar
        self.controller = Controller(ops, seed=seed, max_len=max(ops.max_len, int(max_tokens)), lr=lr,
                                     baseline_rule=baseline, baseline_decay=baseline_decay)
        self.generator = torch.Generator().manual_seed(seed)

    def wider(self, tokens: list[str]) -> tuple[list[dict], Any]:
        decisions = [int(d) for d in self.controller.wider(tokens, self.generator)]
        return self.ops.wider_ops(tokens, decisions), decisions

    def deeper(self, tokens: list[str]) -> tuple[list[dict], Any]:
        d = self.controller.deeper(tokens, self.generator)
        record = [int(x) for x in d if x is not None]
        return self.ops.deeper_ops(tokens, record), record

    def update(self, trajectories: list, accuracies: list[float]) -> dict:
        from nni_xfer.strategies.eas.controller import DeeperDecision
        trajs = [[(kind, list(tokens), DeeperDecision(*rec) if kind == 'deeper' else list(rec))
                  for kind, tokens, rec in traj] for traj in trajectories]
        stats = self.controller.update(trajs, accuracies=list(accuracies))
        return {k: stats[k] for k in ('loss', 'baseline', 'mean_reward') if k in stats}

    def state_dict(self) -> dict:
        import base64
        import io

        import torch
        buf = io.BytesIO()
        torch.save({'controller': self.controller.state_dict(), 'generator': self.generator.get_state()}, buf)
        return {'torch': base64.b64encode(buf.getvalue()).decode('ascii')}

    def load_state_dict(self, state: dict) -> None:
        import base64
        import io

        import torch
        blob = torch.load(io.BytesIO(base64.b64decode(state['torch'])), weights_only=True)
        self.controller.load_state_dict(blob['controller'])
        self.generator.set_state(blob['generator'])


@STRATEGIES.register('eas', description='EAS: RL meta-controller over Net2Wider/Net2Deeper (Cai et al. 2018)')
class EASStrategy(_EASBase):
    """EAS with the RL meta-controller; budget knobs as ``eas_random`` plus the controller's ``lr`` and
    its REINFORCE baseline: ``baseline: code`` (default, the authors' code: ``b ← b + d·(r̄ − b)``) or
    ``paper`` (the paper text's moving average ``b ← d·b + (1 − d)·r̄``), ``d = baseline_decay`` (0.95)."""

    #: tiny real run for the reliability tests (nni_xfer.testing.quick)
    quick_config = {'space': 'eas_plain_cnn', 'space_args': {'start': ['conv-16-3', 'pool', 'conv-16-3', 'pool', 'fc-64']},
                    'strategy_args': {'episodes_per_stage': 10, 'networks_per_episode': 2, 'wider_steps': 1,
                                      'deeper_steps': 1}, 'stateful': True}

    def __init__(self, space: SpaceInfo, seed: int = 0, mode: str = 'maximize',
                 episodes_per_stage: int | list[int] = 30, networks_per_episode: int = 10,
                 wider_steps: int | None = None, deeper_steps: int | None = None, stages: int = 1,
                 stage_epochs: int | None = None, noise: bool = True, dense_deeper: str | None = None,
                 fc_block: str | None = None, lr: float = 2e-3, baseline: str = 'code',
                 baseline_decay: float = 0.95):
        from nni_xfer.strategies.eas.controller import BASELINE_RULES
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
            raise ConfigError('strategy_args.lr', f'expected a positive number, got {lr!r}')
        if baseline not in BASELINE_RULES:
            raise ConfigError('strategy_args.baseline', f'{baseline!r} is not a baseline rule', allowed=BASELINE_RULES)
        if isinstance(baseline_decay, bool) or not isinstance(baseline_decay, (int, float)) \
                or not 0 <= baseline_decay <= 1:
            raise ConfigError('strategy_args.baseline_decay', f'expected a number in [0, 1], got {baseline_decay!r}')
        self.lr = float(lr)
        self.baseline, self.baseline_decay = baseline, float(baseline_decay)
        super().__init__(space, seed=seed, mode=mode, episodes_per_stage=episodes_per_stage,
                         networks_per_episode=networks_per_episode, wider_steps=wider_steps,
                         deeper_steps=deeper_steps, stages=stages, stage_epochs=stage_epochs, noise=noise,
                         dense_deeper=dense_deeper, fc_block=fc_block)

    def _make_policy(self):
        # longest token list the search can reach: the start plus deeper_steps layers per stage
        max_tokens = len(self.adapter.tokens(self.adapter.start())) + self.stages * self.deeper_steps
        return RLPolicy(self.adapter, self.rng, seed=self.seed, lr=self.lr, max_tokens=max_tokens,
                        baseline=self.baseline, baseline_decay=self.baseline_decay)

