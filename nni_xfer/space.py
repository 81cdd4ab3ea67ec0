"""Search-space helpers shared by every method.

Spaces are NNI ``ModelSpace`` subclasses registered in :data:`nni_xfer.registry.SEARCH_SPACES`.
:class:`XferSpace` lets a space use plain Python over its choices (``self.choice(...)`` returns
the frozen value), which is what variable-length paper spaces need; ``freeze(sample)`` rebuilds
the module under NNI's ``model_context``.

Every space accepts ``in_channels``, ``num_classes`` and ``image_size``; the toolkit fills them
from the dataset, so a space's ``space_args`` only hold the space's own knobs.

**The space protocol.** Beyond being a model space, a space class may provide optional *hooks*,
declared on :class:`XferSpace` (default ``None``) and listed in :data:`HOOKS`; methods and the core
read them only through :func:`space_hook`, which names the space, the hook and the spaces that
have it when one is missing. A space never imports a method: imports run method → space → core
(``tests/unit/core/test_import_rule.py``; the one exception is ``search_spaces/module_chain.py``, see there).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar

import nni
import torch.nn as nn
from nni.mutable import Categorical, ensure_frozen
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import model_context

from .errors import ConfigError
from .registry import SEARCH_SPACES
from .strategy import SpaceInfo

DATASET_ARGS = ('in_channels', 'num_classes', 'image_size')


class XferSpace(ModelSpace):
    """A ModelSpace whose constructor may read choices as plain values through :meth:`choice`.

    The optional hooks of the space protocol (see :data:`HOOKS`) are class attributes, ``None``
    unless a space provides them; read them with :func:`space_hook`.
    """

    #: EAS operators (``eas``, ``eas_random``): a class ``(info: SpaceInfo, **options)`` giving the start
    #: point, the token view of an architecture, decisions -> ops and ops -> child architecture; its
    #: ``options`` table lists the ``strategy_args`` it takes. It is also the EAS controller's token
    #: grammar (``vocabulary``, ``max_len``, ``n_blocks``, ``max_layers``, ``deeper_kernels``,
    #: ``widenable``, ``layout``: :class:`nni_xfer.strategies.eas.controller.TokenGrammar`).
    eas_operators: ClassVar[type | None] = None
    #: ``net2net_transform(net, ops, *, noise, generator) -> nn.Module``: the child network of a
    #: network of this space after architecture ops, function-preserving (the ``net2net`` initializer).
    net2net_transform: ClassVar[Callable | None] = None
    #: ``architecture_of(net) -> dict``: the architecture of a network of this space, read from its
    #: modules (the ``net2net`` initializer checks that a transformed child is the trial's architecture).
    architecture_of: ClassVar[Callable | None] = None
    #: ``portal_summary(architecture) -> dict[str, number | str]``: the flat columns NNI's web portal
    #: plots for a trial (:func:`nni_xfer.spec.portal_summary`; without it, a generic summary).
    portal_summary: ClassVar[Callable | None] = None
    #: ``xfer_space_info(self, info) -> SpaceInfo``: what a space whose samples are not plain
    #: categorical choices tells strategies about itself (``info.extra``), called by :func:`space_info`.
    xfer_space_info: ClassVar[Callable | None] = None
    #: the class of the space's architecture grammar: ``grammar.from_info(info)`` is the grammar of
    #: a space built with ``info``; the grammar parses (``parse(arch, field=)``), draws (``random(rng)``)
    #: and mutates (``transform(arch, rng)``) architectures and maps a child's layers to its parent's
    #: (``share_plan(child, parent, **options)``, the ``eatnas_share`` initializer). A space's instance
    #: holds its own grammar in the same attribute. A method reads the grammar methods it needs.
    grammar: ClassVar[Any] = None
    #: ``contract_space_args(tmp_path) -> dict``: ``space_args`` for the registry tests when the
    #: defaults cannot build the space (e.g. it needs a knowledge base, built under ``tmp_path``).
    contract_space_args: ClassVar[Callable | None] = None
    #: the image size (int) the registry tests must build the space for, when not any size fits.
    contract_image_size: ClassVar[int | None] = None

    def choice(self, label: str, values: list) -> Any:
        return ensure_frozen(self.add_mutable(nni.choice(label, list(values))))

    def freeze(self, sample: dict) -> nn.Module:
        with model_context(dict(sample)):
            return self.__class__(*self.trace_args, **self.trace_kwargs)

    def example(self) -> dict:
        """A valid sample (the first choice of every categorical label); spaces whose samples are
        not plain choices override it. The registry tests freeze it and run it forward."""
        return example_sample(self)


#: the optional hooks of the space protocol (attributes of :class:`XferSpace`) and who reads them
HOOKS: dict[str, str] = {
    'eas_operators': 'the eas / eas_random strategies and the EAS controller (token grammar)',
    'net2net_transform': "the 'net2net' initializer (nni_xfer/transfer/net2net.py)",
    'architecture_of': "the 'net2net' initializer (nni_xfer/transfer/net2net.py)",
    'portal_summary': "the trial's parameters shown in NNI's web portal (nni_xfer/spec.py)",
    'xfer_space_info': 'space_info(): what strategies know of a non-categorical space',
    'grammar': "eatnas (parse, random, transform), nao / xfernas (the cell grammar), 'eatnas_share' (share_plan)",
    'contract_space_args': 'the registry tests (space_args a space needs to build)',
    'contract_image_size': 'the registry tests (the input size a space needs)',
}


def spaces_with(hook: str, needs: tuple[str, ...] = ()) -> list[str]:
    """Names of the registered spaces that provide ``hook`` (whose value has every attribute in ``needs``)."""
    return [e.name for e in SEARCH_SPACES.entries()
            if getattr(e.obj, hook, None) is not None and all(hasattr(getattr(e.obj, hook), n) for n in needs)]


def space_hook(space: Any, hook: str, *, needs: tuple[str, ...] = (), field: str = 'space',
               optional: bool = False) -> Any:
    """The value of the protocol hook ``hook`` of ``space`` (a registered name, a space class or a
    space instance; an instance's own attribute wins, so ``space_hook(net_space, 'grammar')`` is
    that space's grammar).

    ``needs``: attributes the hook's value must have (e.g. the grammar methods a method calls).
    A missing hook raises a one-line :class:`ConfigError` naming ``field``, the space, the hook and
    the spaces that have it — or, with ``optional``, gives ``None``.

    >>> space_hook('simple_cnn', 'eas_operators', optional=True) is None
    True
    """
    if hook not in HOOKS:
        raise ValueError(f'space_hook: {hook!r} is not a hook of the space protocol (one of {", ".join(HOOKS)})')
    owner = space
    if isinstance(space, str):
        try:
            owner = SEARCH_SPACES.get(space, field=field)
        except ConfigError:  # not a registered space: it has no hooks
            owner = None
    value = getattr(owner, hook, None)
    if value is not None and all(hasattr(value, n) for n in needs):
        return value
    if optional:
        return None
    what = repr(hook) + (f" with {', '.join(needs)}" if needs else '')
    raise ConfigError(field, f'space {_space_name(space)!r} has no {what} hook', allowed=spaces_with(hook, needs))


def _space_name(space: Any) -> str:
    """The registered name of a space given as a name, a class or an instance (error messages)."""
    if isinstance(space, str):
        return space
    cls = space if isinstance(space, type) else type(space)
    return next((e.name for e in SEARCH_SPACES.entries() if e.obj is cls), cls.__name__)


def example_sample(space: nn.Module) -> dict:
    """The first choice of every categorical label of an NNI model space."""
    return {str(label): m.values[0] for label, m in space.simplify().items() if isinstance(m, Categorical)}


def int_list(value: Any, field: str, *, minimum: int = 1, odd: bool = False) -> list[int]:
    """A non-empty list of distinct integers >= ``minimum`` (odd ones if ``odd``), for ``space_args``
    lists of choices; a one-line :class:`ConfigError` naming ``field`` otherwise."""
    what = f"a non-empty list of distinct {'odd ' if odd else ''}integers >= {minimum}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(field, f'expected {what}, got {value!r}')
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (odd and v % 2 == 0):
            raise ConfigError(field, f'{v!r} is not allowed: expected {what}')
    if len(set(value)) != len(value):
        raise ConfigError(field, f'has repeated values: {list(value)!r}')
    return list(value)


def positive_int(value: Any, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f'expected an integer >= {minimum}, got {value!r}')
    return value


def space_arg_names(cls: type) -> list[str]:
    sig = inspect.signature(getattr(cls, '_init_wrapped', cls.__init__))
    return [n for n, p in sig.parameters.items() if n != 'self' and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def build_space(name: str, space_args: dict | None, dataset_info: Any) -> nn.Module:
    """Instantiate the registered space ``name`` for a dataset (fills in_channels/num_classes/image_size)."""
    cls = SEARCH_SPACES.get(name, field='space')
    space_args = dict(space_args or {})
    allowed = space_arg_names(cls)
    for key in space_args:
        if key in DATASET_ARGS:
            raise ConfigError(f'space_args.{key}', 'is set from the dataset; remove it')
        if key not in allowed:
            raise ConfigError(f'space_args.{key}', f'unknown argument of space {name!r}',
                              allowed=[a for a in allowed if a not in DATASET_ARGS])
    kwargs = {k: getattr(dataset_info, k) for k in DATASET_ARGS if k in allowed}
    try:
        return cls(**kwargs, **space_args)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError('space_args', f'space {name!r} rejected its arguments: {exc}') from exc


def space_info(name: str, space_args: dict | None, space: nn.Module) -> SpaceInfo:
    """Plain-data dimensions (label → choices) of an instantiated space."""
    dims: dict[str, list] = {}
    for label, mutable in space.simplify().items():
        if isinstance(mutable, Categorical):
            dims[str(label)] = list(mutable.values)  # NNI labels are a str subclass; keep plain data
    info = SpaceInfo(name, dict(space_args or {}), dims)
    extra = space_hook(space, 'xfer_space_info', optional=True)
    if extra is not None:  # spaces with non-categorical samples describe themselves
        info = extra(info)
    return info


def freeze(space: nn.Module, architecture: dict) -> nn.Module:
    """The concrete network for a sample, with a one-line error on a bad sample."""
    if not isinstance(architecture, dict):
        raise ConfigError('architecture', f'expected a dict of choices, got {type(architecture).__name__}')
    for label, mutable in space.simplify().items():
        if not isinstance(mutable, Categorical):
            continue
        if label not in architecture:
            raise ConfigError(f'architecture.{label}', 'missing', allowed=mutable.values)
        if architecture[label] not in mutable.values:
            raise ConfigError(f'architecture.{label}', f'{architecture[label]!r} is not a choice',
                              allowed=mutable.values)
    try:
        return space.freeze(architecture)
    except ConfigError:
        raise
    except Exception as exc:  # NNI raises several sample errors; report one line
        raise ConfigError('architecture', f'{type(exc).__name__}: {exc}'.splitlines()[0]) from exc
