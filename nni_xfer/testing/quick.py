"""Quick configurations: every registered strategy in a tiny real run (reliability tests).

The thread, fault-injection and kill/resume tests run *every* registered strategy. A strategy
that needs its own space or arguments declares them as a class attribute::

    @STRATEGIES.register('my_search')
    class MySearch(BaseStrategy):
        quick_config = {'space': 'simple_cnn', 'space_args': {...}, 'strategy_args': {'population': 3},
                        'mode': 'maximize'}

Keys are ``classArgs`` keys (``space``, ``space_args``, ``strategy_args``, ``mode``, ``dataset_args``,
``evaluator``, ``evaluator_args``); ``stateful: true`` adds the strategy to the kill/resume test.
The run uses the ``mock`` evaluator (real trial code, closed-form score, no training) unless the
config names another. Built-in strategies without the attribute are listed in :data:`BUILTIN`.
"""
from __future__ import annotations

import copy
from typing import Any

SIMPLE = {'space': 'simple_cnn', 'space_args': {'widths': [8, 16], 'depths': [1, 2], 'kernels': [3, 5]}}
DEFAULT: dict[str, Any] = {**SIMPLE, 'strategy_args': {}, 'mode': 'maximize'}
EAS_START = ['conv-16-3', 'pool', 'conv-16-3', 'pool', 'fc-64']

#: Built-in strategies that do not declare ``quick_config`` themselves.
BUILTIN: dict[str, dict[str, Any]] = {
    'random': DEFAULT,
    'fixed': {**SIMPLE, 'strategy_args': {'architectures': [
        {'width1': w1, 'width2': w2, 'depth1': d, 'depth2': 1, 'kernel1': 3, 'kernel2': 3}
        for w1 in (8, 16) for w2 in (8, 16) for d in (1, 2)]}},
    'modulenet': {**SIMPLE, 'mode': 'minimize',  # kb_modules init needs module_chain: fresh here
                  'strategy_args': {'population': 3, 'generations': 4, 'init': {'kind': 'fresh'}},
                  'stateful': True},
    'eas': {'space': 'eas_plain_cnn', 'space_args': {'start': EAS_START},
            'strategy_args': {'episodes_per_stage': 10, 'networks_per_episode': 2, 'wider_steps': 1,
                              'deeper_steps': 1}, 'stateful': True},
    'eas_random': {'space': 'eas_plain_cnn', 'space_args': {'start': EAS_START},
                   'strategy_args': {'episodes_per_stage': 10, 'networks_per_episode': 2, 'wider_steps': 1,
                                     'deeper_steps': 1}},
    'eatnas': {'space': 'mbv2_blocks', 'space_args': {'stem_channels': 8, 'head_channels': 32},
               'strategy_args': {'population': 3, 'sample': 2, 'patience': None}, 'stateful': True},
    'nao': {'space': 'nasnet_cells', 'space_args': {'B': 2, 'N': 1, 'F': 4, 'ops': 'nao_ws'},
            'strategy_args': {'seed_archs': 3, 'iterations': 2, 'new_per_iteration': 2, 'top_k': 3,
                              'controller': {'epochs': 3, 'batch_size': 8, 'embedding_size': 8,
                                             'hidden_size': 16, 'max_lambda': 5}},
            'stateful': True},
    'xfernas': {'space': 'nasnet_cells', 'space_args': {'B': 2, 'N': 1, 'F': 4, 'ops': 'nao_ws'},
                'strategy_args': {'seed_archs': 3, 'iterations': 2, 'new_per_iteration': 2, 'top_k': 3,
                                  'phase2_after': 3, 'target': 'digits',
                                  'controller': {'epochs': 3, 'batch_size': 8, 'embedding_size': 8,
                                                 'hidden_size': 16, 'max_lambda': 5}},
                'stateful': True},
}

_CLASS_ARG_KEYS = ('space', 'space_args', 'strategy_args', 'mode', 'dataset', 'dataset_args', 'evaluator',
                   'evaluator_args')


def quick_config(name: str) -> dict[str, Any]:
    """The strategy's quick configuration (its ``quick_config``, else :data:`BUILTIN`, else random's)."""
    from nni_xfer.registry import STRATEGIES
    cls = STRATEGIES.get(name, field='strategy')
    cfg = getattr(cls, 'quick_config', None)
    if cfg is None:
        cfg = BUILTIN.get(name, DEFAULT)
    return copy.deepcopy(dict(cfg))


def quick_class_args(name: str, **overrides: Any) -> dict[str, Any]:
    """``classArgs`` of a tiny run of strategy ``name`` (mock evaluator); ``overrides`` win."""
    cfg = quick_config(name)
    args: dict[str, Any] = {'strategy': name, 'dataset': 'digits', 'dataset_args': {'val_size': 0.2},
                            'evaluator': 'mock', 'evaluator_args': {}, 'seed': 0}
    args.update({k: v for k, v in cfg.items() if k in _CLASS_ARG_KEYS})
    args.update(overrides)
    return args


def stateful_strategies() -> list[str]:
    """Strategies whose quick config says ``stateful: true`` (kill/resume test)."""
    from nni_xfer.registry import STRATEGIES
    return [n for n in STRATEGIES.names() if quick_config(n).get('stateful')]
