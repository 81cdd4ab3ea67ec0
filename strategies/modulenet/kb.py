"""ModuleNet knowledge base: modules cut from trained CNNs, kept as files with their metadata.

A knowledge base is a folder::

    <root>/kb.json                     manifest: input, cells, sources, modules (below)
    <root>/sources/<name>.pt           the whole trained source network (state_dict + metadata)
    <root>/modules/<name>/cell<j>.pt   module j of source <name>: the cell's state_dict + metadata

Each module entry records its source network and family, position, input/output channels, input
and output resolution, parameter count, file and sha256; :func:`build_kb` also records every module
in the knowledge store (``kb_modules`` table). Sources are trained here on a dataset
(``nni-xfer kb build CONFIG``), loaded from a user checkpoint of the same family, or start from
torchvision's pretrained weights when those are in the local cache (never downloaded).

Every source network sees ``input_size``×``input_size`` inputs: smaller images (``digits`` is
8×8) are upsampled by a parameter-free :class:`InputAdapter` in front of the network, so ResNet and
VGG keep their five reductions. A knowledge base root given as a bare name (no ``/``) lives under
``$NNI_XFER_HOME/kb/<name>``; anything else is a path.

>>> resolve_root('digits_quick').name
'digits_quick'
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from nni_xfer.checkpoint import load_checkpoint, save_checkpoint
from nni_xfer.errors import ConfigError

KB_FILE = 'kb.json'
KB_VERSION = 1


def kb_home() -> Path:
    return Path(os.environ.get('NNI_XFER_HOME', Path.home() / '.nni-xfer')) / 'kb'


def resolve_root(root: str | os.PathLike, field: str = 'kb') -> Path:
    """A bare name → ``$NNI_XFER_HOME/kb/<name>``; a path → that path (absolute)."""
    if not isinstance(root, (str, os.PathLike)) or not str(root):
        raise ConfigError(field, f'expected a knowledge-base name or folder, got {root!r}')
    text = os.path.expanduser(str(root))
    if os.sep not in text and '/' not in text and not text.startswith('.'):
        return kb_home() / text
    return Path(text).resolve()


# --------------------------------------------------------------------------- input adapter


class InputAdapter(nn.Module):
    """Parameter-free: images of ``image_size`` with ``in_channels`` → ``input_size`` with ``channels``.

    Resolution by nearest upsampling (or the parameter-free down-sampling of
    :func:`~nni_xfer.strategies.modulenet.connections.resize_spatial`), channels by Channel DePool / Pool.
    """

    def __init__(self, in_channels: int, image_size: int, channels: int, input_size: int):
        super().__init__()
        self.in_channels, self.image_size = in_channels, image_size
        self.channels, self.input_size = channels, input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .connections import channel_depool, channel_pool, resize_spatial
        if x.shape[-1] != self.input_size:
            x = resize_spatial(x, self.input_size)
        c = x.shape[1]
        if c < self.channels:
            x = channel_depool(x, self.channels)
        elif c > self.channels:
            x = channel_pool(x, self.channels)
        return x

    def extra_repr(self) -> str:
        return f'{self.in_channels}x{self.image_size}² → {self.channels}x{self.input_size}²'


class SourceNet(nn.Module):
    """A knowledge-base source network: input adapter + the torchvision-structured network."""

    def __init__(self, adapter: InputAdapter, net: nn.Module):
        super().__init__()
        self.adapter = adapter
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapter(x))


# --------------------------------------------------------------------------- configuration


@dataclass
class SourceConfig:
    """One network of the knowledge base."""

    name: str
    arch: str
    width: float = 1.0
    weights: str | None = None      # None (random init) | 'torchvision' (local cache only)
    checkpoint: str | None = None   # a user checkpoint of this family (state_dict or {'state_dict': ...})
    epochs: int | None = None       # training epochs on the dataset (None: the kb's train.epochs; 0: none)
    small_input: bool | None = None  # None: the kb's small_input


@dataclass
class KBConfig:
    """What ``nni-xfer kb build`` reads (a YAML mapping)."""

    root: str
    sources: list[SourceConfig]
    dataset: str = 'digits'
    dataset_args: dict = field(default_factory=dict)
    input_size: int = 32
    cells: int = 5
    small_input: bool = True
    train: dict = field(default_factory=dict)
    store: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> 'KBConfig':
        from .decompose import SOURCES
        if not isinstance(d, dict):
            raise ConfigError('kb', f'expected a mapping, got {type(d).__name__}')
        allowed = ['root', 'sources', 'dataset', 'dataset_args', 'input_size', 'cells', 'small_input', 'train',
                   'store']
        for key in d:
            if key not in allowed:
                raise ConfigError(f'kb.{key}', 'unknown key', allowed=allowed)
        for key in ('root', 'sources'):
            if key not in d:
                raise ConfigError(f'kb.{key}', 'missing required key')
        raw = d['sources']
        if not isinstance(raw, list) or not raw:
            raise ConfigError('kb.sources', 'expected a non-empty list of {name, arch, ...}')
        sources, names = [], set()
        src_keys = ['name', 'arch', 'width', 'weights', 'checkpoint', 'epochs', 'small_input']
        for i, s in enumerate(raw):
            f = f'kb.sources[{i}]'
            if isinstance(s, str):
                s = {'name': s, 'arch': s}
            if not isinstance(s, dict):
                raise ConfigError(f, f'expected a mapping or an architecture name, got {s!r}')
            for key in s:
                if key not in src_keys:
                    raise ConfigError(f'{f}.{key}', 'unknown key', allowed=src_keys)
            if s.get('arch') not in SOURCES:
                raise ConfigError(f'{f}.arch', f'{s.get("arch")!r} is not a supported family', allowed=SOURCES)
            name = s.get('name', s['arch'])
            if not isinstance(name, str) or not name or '/' in name or name in names:
                raise ConfigError(f'{f}.name', f'expected a unique name without "/", got {name!r}')
            names.add(name)
            width = s.get('width', 1.0)
            if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
                raise ConfigError(f'{f}.width', f'expected a number in (0, 4], got {width!r}')
            weights = s.get('weights')
            if weights not in (None, 'torchvision'):
                raise ConfigError(f'{f}.weights', f'{weights!r} is not allowed', allowed=[None, 'torchvision'])
            ckpt = s.get('checkpoint')
            if ckpt is not None and not Path(os.path.expanduser(str(ckpt))).is_file():
                raise ConfigError(f'{f}.checkpoint', f'no such file: {ckpt}')
            epochs = s.get('epochs')
            if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0):
                raise ConfigError(f'{f}.epochs', f'expected an integer >= 0, got {epochs!r}')
            sources.append(SourceConfig(name=name, arch=s['arch'], width=float(width), weights=weights,
                                        checkpoint=None if ckpt is None else str(Path(ckpt).expanduser().resolve()),
                                        epochs=epochs, small_input=s.get('small_input')))
        cfg = cls(root=d['root'], sources=sources, dataset=d.get('dataset', 'digits'),
                  dataset_args=dict(d.get('dataset_args') or {}), input_size=d.get('input_size', 32),
                  cells=d.get('cells', 5), small_input=d.get('small_input', True), train=dict(d.get('train') or {}),
                  store=d.get('store'))
        resolve_root(cfg.root, 'kb.root')
        if isinstance(cfg.input_size, bool) or not isinstance(cfg.input_size, int) or cfg.input_size < 8:
            raise ConfigError('kb.input_size', f'expected an integer >= 8, got {cfg.input_size!r}')
        if isinstance(cfg.cells, bool) or not isinstance(cfg.cells, int) or not 1 <= cfg.cells <= 5:
            raise ConfigError('kb.cells', f'expected an integer in 1..5, got {cfg.cells!r}')
        if not isinstance(cfg.small_input, bool):
            raise ConfigError('kb.small_input', f'expected true or false, got {cfg.small_input!r}')
        from nni_xfer.data.pipeline import dataset_info
        from nni_xfer.training.trainer import TrainConfig
        try:
            dataset_info(cfg.dataset, **cfg.dataset_args)
        except ConfigError as exc:
            raise ConfigError(f'kb.{exc.field}', exc.message, exc.allowed) from None
        TrainConfig.from_dict(cfg.train, field='kb.train')
        return cfg


# --------------------------------------------------------------------------- the knowledge base


class KnowledgeBase:
    """A built knowledge base (read side): its manifest and the modules' structure and weights."""

    def __init__(self, root: str | os.PathLike, field: str = 'kb'):
        self.root = resolve_root(root, field)
        path = self.root / KB_FILE
        if not path.is_file():
            raise ConfigError(field, f'no knowledge base at {self.root} (build one with `nni-xfer kb build CONFIG`)')
        self.manifest = json.loads(path.read_text())
        if self.manifest.get('version') != KB_VERSION:
            raise ConfigError(field, f'{path} has version {self.manifest.get("version")!r}, expected {KB_VERSION}')

    # ---- manifest views ----
    @property
    def cells(self) -> int:
        return int(self.manifest['cells'])

    @property
    def input_size(self) -> int:
        return int(self.manifest['input_size'])

    @property
    def channels(self) -> int:
        """Input channels of the source networks."""
        return int(self.manifest['in_channels'])

    @property
    def sources(self) -> list[dict]:
        return list(self.manifest['sources'])

    def source_names(self) -> list[str]:
        return [s['name'] for s in self.manifest['sources']]

    def source(self, name: str, field: str = 'source') -> dict:
        for s in self.manifest['sources']:
            if s['name'] == name:
                return s
        raise ConfigError(field, f'{name!r} is not in the knowledge base {self.root}', allowed=self.source_names())

    def module_info(self, name: str, position: int) -> dict:
        for m in self.manifest['modules']:
            if m['source'] == name and m['position'] == position:
                return m
        raise ConfigError('module', f'no module {name}[{position}] in {self.root}')

    # ---- structure and weights ----
    def source_network(self, name: str, num_classes: int | None = None) -> SourceNet:
        """A fresh (untrained) source network of the same structure as ``name``."""
        from .decompose import build_source
        s = self.source(name)
        net = build_source(s['arch'], num_classes=num_classes or self.manifest['num_classes'],
                           in_channels=self.channels, small_input=s['small_input'], width=s['width'])
        m = self.manifest
        return SourceNet(InputAdapter(m['dataset_in_channels'], m['image_size'], self.channels, self.input_size), net)

    def module(self, name: str, position: int) -> nn.Module:
        """The structure of module ``position`` of source ``name`` (weights not loaded)."""
        from .decompose import decompose
        s = self.source(name)
        cells = decompose(self.source_network(name).net, s['arch'], cells=self.cells)
        return cells[position].module

    def module_state(self, name: str, position: int, verify: bool = True) -> dict[str, torch.Tensor]:
        info = self.module_info(name, position)
        ckpt = load_checkpoint(str(self.root / info['file']), info['sha256'] if verify else None)
        return ckpt['state_dict']


def _train_config(base: dict, epochs: int | None):
    from nni_xfer.training.trainer import TrainConfig
    d = dict(base)
    if epochs is not None:
        d['epochs'] = epochs
    return TrainConfig.from_dict(d, field='kb.train')


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _load_user_checkpoint(net: nn.Module, path: str, field: str) -> None:
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(field, f'{path} holds no state_dict')
    if any(k.startswith('net.') for k in state):  # a SourceNet checkpoint (e.g. from another kb)
        state = {k[4:]: v for k, v in state.items() if k.startswith('net.')}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(field, f'{path} does not fit this family/width ({str(exc).splitlines()[0]})') from None


def build_kb(config: KBConfig | dict, progress: Callable[[str], None] = print, store: Any = None,
             rebuild: bool = False) -> KnowledgeBase:
    """Train (or load) every source network, cut it into cells and write the knowledge base.

    The manifest is rewritten after each source, so an interrupted build resumes where it stopped
    (sources already present with the same settings are kept unless ``rebuild``).
    """
    from nni_xfer.data.pipeline import load_dataset
    from nni_xfer.training.evaluators import count_flops
    from nni_xfer.store import KnowledgeStore
    from nni_xfer.training.trainer import Trainer
    from .decompose import build_source, cell_shapes, decompose

    cfg = config if isinstance(config, KBConfig) else KBConfig.from_dict(config)
    root = resolve_root(cfg.root, 'kb.root')
    root.mkdir(parents=True, exist_ok=True)
    progress(f'knowledge base {root}: loading dataset {cfg.dataset}')
    splits = load_dataset(cfg.dataset, **cfg.dataset_args)
    info = splits.info
    header = {
        'version': KB_VERSION, 'cells': cfg.cells, 'input_size': cfg.input_size, 'in_channels': info.in_channels,
        'dataset_in_channels': info.in_channels, 'image_size': info.image_size, 'num_classes': info.num_classes,
        'dataset': cfg.dataset, 'dataset_args': cfg.dataset_args,
    }
    path = root / KB_FILE
    old = json.loads(path.read_text()) if path.is_file() and not rebuild else None
    if old is not None and any(old.get(k) != v for k, v in header.items()):
        progress('existing manifest has other settings: rebuilding every source')
        old = None
    manifest = {**header, 'sources': [], 'modules': []}
    st = KnowledgeStore.resolve(store if store is not None else cfg.store)
    t_all = time.time()
    for i, src in enumerate(cfg.sources):
        small = cfg.small_input if src.small_input is None else src.small_input
        settings = {'arch': src.arch, 'width': src.width, 'weights': src.weights, 'checkpoint': src.checkpoint,
                    'epochs': src.epochs if src.epochs is not None else _train_config(cfg.train, None).epochs,
                    'small_input': small, 'train': cfg.train}
        prev = next((s for s in (old or {}).get('sources', []) if s['name'] == src.name), None)
        if prev is not None and prev.get('settings') == settings and (root / prev['checkpoint']).is_file():
            progress(f'[{i + 1}/{len(cfg.sources)}] {src.name}: already built (val_acc {prev["val_acc"]:.4f})')
            manifest['sources'].append(prev)
            manifest['modules'].extend(m for m in old['modules'] if m['source'] == src.name)
            _write_manifest(path, manifest)
            continue
        t0 = time.time()
        net = build_source(src.arch, num_classes=info.num_classes, in_channels=info.in_channels,
                           small_input=small, width=src.width, weights=src.weights)
        if src.checkpoint:
            _load_user_checkpoint(net, src.checkpoint, f'kb.sources[{i}].checkpoint')
        model = SourceNet(InputAdapter(info.in_channels, info.image_size, info.in_channels, cfg.input_size), net)
        tc = _train_config(cfg.train, src.epochs)
        trainer = Trainer(tc)
        progress(f'[{i + 1}/{len(cfg.sources)}] {src.name}: {src.arch} width {src.width:g}, '
                 f'{_count(model) / 1e6:.2f}M params, training {tc.epochs} epochs on {trainer.device}')

        def on_epoch(ep, name=src.name):
            progress(f'  {name} epoch {ep.epoch}/{tc.epochs}: loss {ep.train_loss:.4f} val_acc {ep.val_acc:.4f} '
                     f'({ep.seconds:.1f}s)')

        result = trainer.fit(model, splits, on_epoch=on_epoch)
        model.eval()
        val_acc = trainer.evaluate_split(model, splits, 'val')
        test_acc = trainer.evaluate_split(model, splits, 'test')
        model.cpu()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        meta = {'name': src.name, 'arch': src.arch, 'width': src.width, 'small_input': small}
        _, sha = save_checkpoint({'state_dict': state, **meta}, root / 'sources' / f'{src.name}.pt')
        cells = decompose(net, src.arch, cells=cfg.cells)
        shapes = cell_shapes(cells, info.in_channels, cfg.input_size)
        manifest['modules'] = [m for m in manifest['modules'] if m['source'] != src.name]
        for cell, (in_size, out_size) in zip(cells, shapes):
            rel = f'modules/{src.name}/cell{cell.index}.pt'
            mmeta = {'source': src.name, 'arch': src.arch, 'width': src.width, 'position': cell.index,
                     'in_channels': cell.in_channels, 'out_channels': cell.out_channels,
                     'in_size': in_size, 'out_size': out_size, 'params': _count(cell.module)}
            cstate = {k: v.detach().cpu() for k, v in cell.module.state_dict().items()}
            _, csha = save_checkpoint({'state_dict': cstate, **mmeta}, root / rel)
            manifest['modules'].append({**mmeta, 'file': rel, 'sha256': csha})
            st.record_module(str(root), src.name, cell.index, file=str(root / rel), arch=src.arch,
                             in_channels=cell.in_channels, out_channels=cell.out_channels, in_size=in_size,
                             out_size=out_size, params=mmeta['params'], sha256=csha,
                             meta={'width': src.width, 'val_acc': val_acc, 'dataset': cfg.dataset})
        entry = {'name': src.name, 'arch': src.arch, 'width': src.width, 'small_input': small,
                 'origin': 'checkpoint' if src.checkpoint else (src.weights or 'trained'),
                 'val_acc': val_acc, 'test_acc': test_acc, 'params': _count(model),
                 'flops': count_flops(model, (info.in_channels, info.image_size, info.image_size)),
                 'epochs': tc.epochs, 'train_seconds': result.train_seconds, 'seconds': time.time() - t0,
                 'checkpoint': f'sources/{src.name}.pt', 'sha256': sha, 'settings': settings}
        manifest['sources'].append(entry)
        _write_manifest(path, manifest)
        progress(f'[{i + 1}/{len(cfg.sources)}] {src.name}: val_acc {val_acc:.4f} test_acc {test_acc:.4f} '
                 f'({time.time() - t0:.1f}s); {len(cells)} modules saved')
    progress(f'knowledge base {root}: {len(manifest["sources"])} sources, {len(manifest["modules"])} modules '
             f'in {time.time() - t_all:.1f}s')
    return KnowledgeBase(root)


def _write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
