"""Weight initializers: how a trial's network starts — the knowledge-transfer mechanisms.

An initializer is a callable ``(model, init, ctx) -> None`` registered in
:data:`~nni_xfer.registry.INITIALIZERS`; ``init`` is the trial spec's ``init`` block
(``{'kind': name, ...}``). Methods add theirs (Net2Net for EAS, width/depth sharing for EAT-NAS,
knowledge-base modules for ModuleNet).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..checkpoint import load_checkpoint
from ..errors import CheckpointError, ConfigError
from ..registry import INITIALIZERS


@INITIALIZERS.register('fresh', description="PyTorch's default initialisation, seeded by the trial spec's seed")
def fresh(model: nn.Module, init: dict, ctx: Any = None) -> None:
    """Keep the freshly constructed weights (the model was built after seeding)."""
    extra = set(init) - {'kind'}
    if extra:
        raise ConfigError(f'init.{sorted(extra)[0]}', "unknown key for init kind 'fresh'", allowed=['kind'])


@INITIALIZERS.register('checkpoint', description='Load all weights of the same architecture from a checkpoint')
def from_checkpoint(model: nn.Module, init: dict, ctx: Any = None) -> None:
    """Load ``init['uri']`` (optionally verified against ``init['sha256']``) into the same architecture."""
    if 'uri' not in init:
        raise ConfigError('init.uri', "required for init kind 'checkpoint'")
    ckpt = load_checkpoint(init['uri'], init.get('sha256'))
    state = ckpt.get('state_dict') if isinstance(ckpt, dict) else None
    if state is None:
        raise CheckpointError(f"checkpoint has no 'state_dict': {init['uri']}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint does not fit the architecture ({first}): {init['uri']}") from exc
