"""The trial spec: everything a trial needs, carried by NNI as the trial's parameters.

A trial reads only files named in its spec and never opens the knowledge-store database.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import ConfigError


@dataclass
class TrialSpec:
    space: str
    architecture: dict
    dataset: str = 'digits'
    evaluator: str = 'train'
    space_args: dict = field(default_factory=dict)
    dataset_args: dict = field(default_factory=dict)
    evaluator_args: dict = field(default_factory=dict)
    init: dict = field(default_factory=lambda: {'kind': 'fresh'})
    seed: int = 0
    proposal_id: int = 0
    experiment_id: str = 'standalone'
    strategy: str | None = None
    parent: int | None = None
    checkpoint_root: str | None = None
    mode: str = 'maximize'

    @classmethod
    def from_dict(cls, d: dict) -> 'TrialSpec':
        if not isinstance(d, dict):
            raise ConfigError('trial spec', f'expected a dict, got {type(d).__name__}')
        names = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ConfigError(f'trial spec.{unknown[0]}', 'unknown key', allowed=sorted(names))
        for required in ('space', 'architecture'):
            if required not in d:
                raise ConfigError(f'trial spec.{required}', 'missing')
        spec = cls(**d)
        if not isinstance(spec.init, dict) or 'kind' not in spec.init:
            raise ConfigError('trial spec.init', "expected a dict with a 'kind' key")
        return spec

    @classmethod
    def from_proposal(cls, proposal: Any, proposal_id: int, *, experiment_id: str, strategy: str | None,
                      space: str, dataset: str, evaluator: str, seed: int = 0, space_args: dict | None = None,
                      dataset_args: dict | None = None, evaluator_args: dict | None = None, mode: str = 'maximize',
                      checkpoint_root: str | None = None) -> 'TrialSpec':
        """The spec of a strategy's :class:`~nni_xfer.strategy.Proposal` (what every adapter sends).

        Each trial gets its own seed derived from the experiment seed; ``proposal.meta['evaluator_args']``
        overrides the experiment's evaluator arguments for this trial only.
        """
        return cls(space=space, architecture=proposal.architecture, dataset=dataset, evaluator=evaluator,
                   space_args=dict(space_args or {}), dataset_args=dict(dataset_args or {}),
                   evaluator_args={**(evaluator_args or {}), **proposal.meta.get('evaluator_args', {})},
                   init=proposal.init, seed=seed * 100003 + proposal_id, proposal_id=proposal_id,
                   experiment_id=experiment_id, strategy=strategy, parent=proposal.parent,
                   checkpoint_root=checkpoint_root, mode=mode)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def checkpoint_path(self):
        from pathlib import Path

        from .checkpoint import default_checkpoint_root
        root = Path(self.checkpoint_root) if self.checkpoint_root else default_checkpoint_root()
        return root / self.experiment_id / f'{self.proposal_id}.pt'
