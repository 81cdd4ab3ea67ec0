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
config names another; the mock scores every built-in space by the architecture's choices, so a
ranking strategy really ranks. A quick config exercises the method, not its fallbacks: size the
strategy's own learner so that its decisions fill the budget (e.g. NAO/XferNAS train the controller
enough for latent steps to decode new cells instead of random fill). A strategy without the
attribute runs :data:`DEFAULT`.
"""
from __future__ import annotations

import copy
from typing import Any

SIMPLE = {'space': 'simple_cnn', 'space_args': {'widths': [8, 16], 'depths': [1, 2], 'kernels': [3, 5]}}
#: the quick config of a strategy that declares none (the categorical toy space, no strategy_args)
DEFAULT: dict[str, Any] = {**SIMPLE, 'strategy_args': {}, 'mode': 'maximize'}

_CLASS_ARG_KEYS = ('space', 'space_args', 'strategy_args', 'mode', 'dataset', 'dataset_args', 'evaluator',
                   'evaluator_args')


def quick_config(name: str) -> dict[str, Any]:
    """The strategy's quick configuration (its ``quick_config`` class attribute, else :data:`DEFAULT`)."""
    from nni_xfer.registry import STRATEGIES
    cls = STRATEGIES.get(name, field='strategy')
    cfg = getattr(cls, 'quick_config', None)
    if cfg is None:
        cfg = DEFAULT
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
