"""ModuleNet's module-chain space (paper Sec. III-C/D): one knowledge-base module per position.

An architecture is ``{'module_0': source, ..., 'module_{c-1}': source}``: position ``j`` takes cell
``j`` of the named source network, with that network's trained weights (loaded by the ``kb_modules``
initializer). Each module keeps its original position and its original input resolution: where the
next module wants a larger map, the preceding module's own last reduction (pool or stride) is
dropped, where it wants a smaller one a parameter-free pool follows (paper Sec. III-B;
``resolution: resize`` upsamples instead). Between neighbours a parameter-free
:class:`~nni_xfer.strategies.modulenet.connections.Connection` (Channel Pool / DePool with the gcd
generalisation) joins them, or a trainable 1×1 conv for the paper's Fig. 10 ablation (``connection: conv1x1``). With
``frozen: true`` (search) modules get no gradient and their BatchNorms stay in eval mode; the
classifier head (default: flatten → 4096 → 4096 → classes, paper Sec. IV) is what trains.
``frozen: false`` is the fine-tuning stage: every weight trains.

The one exception to the import rule (space → core only; tests/unit/core/test_import_rule.py): this space
imports its method's knowledge base (``strategies/modulenet/kb.py``) and connections, inside
functions. Its architectures are names of ModuleNet's knowledge-base modules, so it cannot exist
without that method; it stays here, registered like every space, so that a trial's fast registry
lookup imports this file alone and not every method package.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from nni_xfer.errors import ConfigError
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import XferSpace

CONNECTIONS = ('pool', 'conv1x1', 'conv1x1_bn_relu')


class FrozenModule(nn.Module):
    """A knowledge-base module that does not learn: no gradients, BatchNorm always in eval mode."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.module.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> 'FrozenModule':
        super().train(mode)
        self.module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class Position(nn.Module):
    """Connection into position ``j`` followed by its module."""

    def __init__(self, connection: nn.Module, module: nn.Module, source: str, dropped: list[str] = ()):
        super().__init__()
        self.connection = connection
        self.module = module
        self.source = source
        self.dropped = list(dropped)  # reductions of this module removed so the next one needs no upsampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.connection(x))

    def cell(self) -> nn.Module:
        """The knowledge-base module itself (inside the frozen wrapper, if any)."""
        return self.module.module if isinstance(self.module, FrozenModule) else self.module


@SEARCH_SPACES.register('module_chain', description='ModuleNet: chains of frozen knowledge-base modules, ChP/ChDP')
class ModuleChain(XferSpace):
    """Chains of knowledge-base modules (see the module docstring).

    Args:
        kb: knowledge-base name (``$NNI_XFER_HOME/kb/<name>``) or folder, built by ``nni-xfer kb build``.
        sources: the source networks to search over (default: all of the knowledge base).
        head_units: hidden units of the classifier head (paper: ``[4096, 4096]``).
        connection: ``pool`` (parameter-free ChP/ChDP, the paper's), ``conv1x1`` (the ablation's plain
            trainable 1×1 conv) or ``conv1x1_bn_relu`` (1×1 conv + BN + ReLU).
        frozen: modules frozen (search) or trainable (fine-tuning).
        dropout: dropout before each hidden layer of the head.
        resolution: ``adjust`` (paper Sec. III-B: drop the preceding module's own last reductions
            when the next module wants a larger map, pool when it wants a smaller one — never
            upsample; see :func:`~nni_xfer.strategies.modulenet.connections.plan_resolution`) or
            ``resize`` (modules unchanged; the connection max-pools or nearest-upsamples).
    """

    contract_image_size = 32  # the knowledge base of contract_space_args is built for 32x32 inputs

    @staticmethod
    def contract_space_args(tmp_path) -> dict:
        """For the registry tests: a one-source knowledge base (ResNet-18 at width 1/8, one epoch on
        300 digits images) built under ``tmp_path``."""
        from nni_xfer.store import KnowledgeStore
        from nni_xfer.strategies.modulenet.kb import build_kb
        root = tmp_path / 'kb'
        cfg = {'root': str(root), 'dataset': 'digits', 'dataset_args': {'limit_train': 300}, 'input_size': 32,
               'train': {'epochs': 1, 'augment': False, 'batch_size': 64},
               'sources': [{'name': 'r18', 'arch': 'resnet18', 'width': 0.125}]}
        build_kb(cfg, store=KnowledgeStore(tmp_path / 'store.db'))
        return {'kb': str(root), 'head_units': [16]}

    def __init__(self, kb: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 sources: list[str] | None = None, head_units: list[int] = (4096, 4096), connection: str = 'pool',
                 frozen: bool = True, dropout: float = 0.0, resolution: str = 'adjust'):
        super().__init__()
        from nni_xfer.strategies.modulenet.connections import RESOLUTIONS, Connection, plan_resolution
        from nni_xfer.strategies.modulenet.decompose import drop_reductions, reductions
        from nni_xfer.strategies.modulenet.kb import InputAdapter, KnowledgeBase
        base = KnowledgeBase(kb, field='space_args.kb')
        names = base.source_names()
        if sources is not None:
            if not isinstance(sources, (list, tuple)) or not sources:
                raise ConfigError('space_args.sources', f'expected a non-empty list of source names, got {sources!r}',
                                  allowed=names)
            for s in sources:
                if s not in names:
                    raise ConfigError('space_args.sources', f'{s!r} is not in the knowledge base', allowed=names)
            names = [s for s in names if s in sources]
        if connection not in CONNECTIONS:
            raise ConfigError('space_args.connection', f'{connection!r} is not a connection kind', allowed=CONNECTIONS)
        if resolution not in RESOLUTIONS:
            raise ConfigError('space_args.resolution', f'{resolution!r} is not a resolution mode', allowed=RESOLUTIONS)
        units = list(head_units)
        if any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in units):
            raise ConfigError('space_args.head_units', f'expected a list of positive integers, got {head_units!r}')
        if not isinstance(frozen, bool):
            raise ConfigError('space_args.frozen', f'expected true or false, got {frozen!r}')
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError('space_args.dropout', f'expected a number in [0, 1), got {dropout!r}')
        self.kb_root = str(base.root)
        self.connection_kind = connection
        self.resolution = resolution
        self.frozen = frozen
        self.codes = [self.choice(f'module_{j}', names) for j in range(base.cells)]

        self.adapter = InputAdapter(in_channels, image_size, base.channels, base.input_size)
        infos = [base.module_info(name, j) for j, name in enumerate(self.codes)]
        modules = [base.module(name, j) for j, name in enumerate(self.codes)]
        factors = [[f for _, f in reductions(m)] for m in modules]
        if resolution == 'adjust':
            sides, keep = plan_resolution([i['in_size'] for i in infos], factors)
        else:
            sides, keep = [i['in_size'] for i in infos], [len(f) for f in factors]
        positions = []
        c, size = base.channels, base.input_size
        for j, (name, info, module) in enumerate(zip(self.codes, infos, modules)):
            dropped = drop_reductions(module, len(factors[j]) - keep[j])
            if (c, size) != (info['in_channels'], sides[j]):
                conn: nn.Module = Connection(c, info['in_channels'], size, sides[j], kind=connection)
            else:
                conn = nn.Identity()
            positions.append(Position(conn, FrozenModule(module) if frozen else module, name, dropped))
            c, size = info['out_channels'], info['out_size']
            if (sides[j], keep[j]) != (info['in_size'], len(factors[j])):  # an adjusted module (never the last)
                size = sides[j]
                for f in factors[j][:keep[j]]:
                    size //= f
        self.positions = nn.ModuleList(positions)
        self.features = c * size * size
        layers: list[nn.Module] = [nn.Flatten()]
        width = self.features
        for u in units:
            if dropout:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Linear(width, u), nn.ReLU(inplace=True)]
            width = u
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)

    @staticmethod
    def portal_summary(architecture: dict) -> dict:
        """What NNI's web portal plots (nni_xfer.spec.portal_summary): how many distinct sources the
        chain mixes (a number first: NNI's chart clips the tick labels left of its first axis), then
        the source of each position."""
        modules = {k: v for k, v in architecture.items() if str(k).startswith('module_')}
        return {'sources': len(set(modules.values())), **modules}

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The knowledge-base part: input adapter, connections and modules (before the head)."""
        x = self.adapter(x)
        for p in self.positions:
            x = p(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def trunk_is_fixed(self) -> bool:
        """True when nothing before the head learns (frozen modules, parameter-free connections)."""
        return self.frozen and not any(p.requires_grad for p in self.positions.parameters())

    def load_kb_weights(self, verify: bool = True) -> None:
        """Load every position's module weights from the knowledge base."""
        from nni_xfer.strategies.modulenet.kb import KnowledgeBase
        base = KnowledgeBase(self.kb_root)
        for j, p in enumerate(self.positions):
            p.cell().load_state_dict(base.module_state(p.source, j, verify=verify), strict=True)
