"""Search-space helpers shared by every method.

Spaces are NNI ``ModelSpace`` subclasses registered in :data:`nni_xfer.registry.SEARCH_SPACES`.
:class:`XferSpace` lets a space use plain Python over its choices (``self.choice(...)`` returns
the frozen value), which is what variable-length paper spaces need; ``freeze(sample)`` rebuilds
the module under NNI's ``model_context``.

Every space accepts ``in_channels``, ``num_classes`` and ``image_size``; the toolkit fills them
from the dataset, so a space's ``space_args`` only hold the space's own knobs.
"""
from __future__ import annotations

import inspect
from typing import Any

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
    """A ModelSpace whose constructor may read choices as plain values through :meth:`choice`."""

    def choice(self, label: str, values: list) -> Any:
        return ensure_frozen(self.add_mutable(nni.choice(label, list(values))))

    def freeze(self, sample: dict) -> nn.Module:
        with model_context(dict(sample)):
            return self.__class__(*self.trace_args, **self.trace_kwargs)

    def example(self) -> dict:
        """A valid sample (the first choice of every categorical label); spaces whose samples are
        not plain choices override it. The registry tests freeze it and run it forward."""
        return example_sample(self)


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
    extra = getattr(space, 'xfer_space_info', None)
    if callable(extra):  # spaces with non-categorical samples describe themselves
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
