"""The dataset contract and pipeline for in-memory image classification datasets.

Every dataset (the built-in ones: :mod:`nni_xfer.data.builtin`) is a small class registered in
:data:`nni_xfer.registry.DATASETS` with two methods::

    info(**args) -> DatasetInfo                       # metadata only, no data loading
    load(root, download, **args) -> (train_x, train_y, test_x, test_y)

``load`` returns raw arrays (numpy or torch; images as ``(N, C, H, W)`` or ``(N, H, W)``,
any numeric dtype). :func:`load_dataset` does the rest for every dataset: it holds out a
validation split from the training data with a seeded permutation, normalises every split
per channel with the statistics of the training part, and returns float32 tensors in a
:class:`Splits`.

Two arguments work for every in-memory dataset that does not declare them itself
(:data:`GENERIC_ARGS`): ``classes: [c0, c1, ..]`` keeps only those classes and relabels them
``0..k-1`` in the order given, and ``image_size: N`` resizes every image to ``N x N`` (bilinear,
antialiased). Both are part of the cache key and change :func:`dataset_info` (``num_classes``,
``image_size``, the crop padding), so one dataset gives a family of related tasks, e.g.
``fashion_mnist`` classes 0-4 vs 5-9, or ``fashion_mnist`` at 14x14.

Third-party datasets register the same way (or via the ``nni_xfer.datasets`` entry-point group)::

    @DATASETS.register('my_data', description='...')
    class MyData(ImageDataset):
        args = {}
        def info(self, **args): ...
        def load(self, root, download, **args): ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import DATASETS

__all__ = [
    'DatasetInfo', 'Splits', 'ImageDataset', 'dataset_info', 'load_dataset', 'default_root',
    'FASHION_MNIST_SYSTEM_DIR', 'cache_dir', 'cache_path', 'GENERIC_ARGS',
]

FASHION_MNIST_SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'
"""Where Debian's ``dataset-fashion-mnist`` package installs the (gzipped) idx files."""


def default_root() -> str:
    """Default download/cache directory of torchvision datasets (``~/.cache/nni_xfer/data``)."""
    return os.path.join(os.path.expanduser('~'), '.cache', 'nni_xfer', 'data')


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    in_channels: int
    image_size: int  # square images, H == W
    num_classes: int
    pad: int  # random-crop padding used by augmentation
    flip: bool  # horizontal flips allowed by augmentation
    description: str


@dataclass(repr=False)
class Splits:
    """Normalised float32 ``(N, C, H, W)`` images and int64 labels of the three splits."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device: torch.device | str) -> 'Splits':
        """A copy with every tensor on ``device`` (tensors already there are shared)."""
        return Splits(
            self.info,
            self.train_x.to(device), self.train_y.to(device),
            self.val_x.to(device), self.val_y.to(device),
            self.test_x.to(device), self.test_y.to(device),
        )

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    #: In memory (``imagefolder``'s :class:`~nni_xfer.data.imagefolder.StreamedSplits` streams from disk).
    streamed = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` of one image."""
        return tuple(self.train_x.shape[1:])

    def size(self, split: str) -> int:
        return len(getattr(self, f'{split}_y'))

    def batches(self, split: str, batch_size: int):
        """``(images, labels)`` slices of ``split`` ('train', 'val', 'test') in order (evaluation)."""
        x, y = getattr(self, f'{split}_x'), getattr(self, f'{split}_y')
        for i in range(0, len(y), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]

    def sample_images(self, n: int) -> torch.Tensor:
        """The first ``n`` training images (BatchNorm calibration of inserted layers)."""
        return self.train_x[:n]

    def __repr__(self) -> str:
        return (f'Splits({self.info.name!r}, train={len(self.train_y)}, val={len(self.val_y)}, '
                f'test={len(self.test_y)}, shape={tuple(self.train_x.shape[1:])}, device={self.device})')


# --------------------------------------------------------------------------- helpers


def _check_args(name: str, spec: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Merge ``args`` into the defaults ``spec``; unknown keys or wrong types -> ConfigError."""
    out = dict(spec)
    for key, value in args.items():
        if key not in spec:
            raise ConfigError(f'dataset_args.{key}', f'unknown argument of dataset {name!r}',
                              allowed=sorted(set(spec) | {'download', 'limit_train', 'root', 'seed', 'val_size'}
                                             | _generic_names(name)))
        default = spec[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = True
        if not ok:
            raise ConfigError(f'dataset_args.{key}', f'expected {type(default).__name__}, got {value!r}')
        out[key] = value
    return out


#: Arguments that :func:`load_dataset` applies to every in-memory dataset not declaring them itself.
GENERIC_ARGS = ('classes', 'image_size')


def _generic_names(name: str) -> set[str]:
    """The generic arguments dataset ``name`` accepts (none for a streamed dataset)."""
    try:
        ds = _instance(name)
    except ConfigError:
        return set()
    if getattr(ds, 'streamed', False):
        return set()
    return {k for k in GENERIC_ARGS if k not in getattr(ds, 'args', {})}


def _split_generic(ds: Any, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(the dataset's own args, the generic ones)``; a dataset that declares a generic name
    (``synthetic``'s ``image_size``) keeps it as its own."""
    if getattr(ds, 'streamed', False):
        return dict(args), {}
    own_spec = getattr(ds, 'args', {})
    generic = {k: args[k] for k in GENERIC_ARGS if k in args and k not in own_spec}
    return {k: v for k, v in args.items() if k not in generic}, generic


def _check_generic(generic: dict[str, Any], info: 'DatasetInfo') -> 'DatasetInfo':
    """Validate ``classes``/``image_size`` against the dataset's own metadata; the task's metadata."""
    import dataclasses

    changes: dict[str, Any] = {}
    notes = []
    if 'classes' in generic:
        classes = generic['classes']
        n = info.num_classes
        if not isinstance(classes, (list, tuple)) or any(isinstance(c, bool) or not isinstance(c, int)
                                                         for c in classes):
            raise ConfigError('dataset_args.classes', f'expected a list of class indices in [0, {n - 1}], '
                                                      f'got {classes!r}')
        bad = [c for c in classes if not 0 <= c < n]
        if bad:
            raise ConfigError('dataset_args.classes', f'class {bad[0]} out of range: {info.name} has classes '
                                                      f'0..{n - 1}')
        if len(set(classes)) != len(classes):
            dup = next(c for c in classes if list(classes).count(c) > 1)
            raise ConfigError('dataset_args.classes', f'class {dup} listed twice')
        if len(classes) < 2:
            raise ConfigError('dataset_args.classes', f'expected at least 2 classes, got {list(classes)!r}')
        changes['num_classes'] = len(classes)
        notes.append(f'classes {list(classes)} relabelled 0..{len(classes) - 1}')
    if 'image_size' in generic:
        size = generic['image_size']
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ConfigError('dataset_args.image_size', f'expected an integer >= 2 (pixels per side), got {size!r}')
        changes['image_size'] = size
        # crop padding scales with the image (fashion_mnist 28 -> 14: 2 -> 1 pixel)
        changes['pad'] = max(1, round(info.pad * size / info.image_size)) if info.pad > 0 else 0
        notes.append(f'resized to {size}x{size}')
    if not changes:
        return info
    return dataclasses.replace(info, description=f'{info.description}; {", ".join(notes)}', **changes)


def _apply_generic(generic: dict[str, Any], x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep/relabel ``classes`` and resize to ``image_size`` (float images ``(N, C, H, W)``)."""
    if 'classes' in generic:
        classes = torch.as_tensor(list(generic['classes']), dtype=torch.long)
        keep = (y.view(-1, 1) == classes.view(1, -1))
        mask = keep.any(dim=1)
        x, y = x[mask], keep[mask].long().argmax(dim=1)
    size = generic.get('image_size')
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode='bilinear', align_corners=False,
                                            antialias=size < min(x.shape[-2:]))
    return x, y


def _positive(key: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigError(f'dataset_args.{key}', f'must be >= {minimum}, got {value!r}')


class ImageDataset:
    """Base class of the built-in datasets; ``args`` maps each accepted argument to its default."""

    name: str = ''
    args: dict[str, Any] = {}
    #: Part of the dataset cache key: bump it when what ``load`` returns changes.
    version: int = 1

    def check_args(self, **args: Any) -> dict[str, Any]:
        return _check_args(self.name, self.args, args)

    def info(self, **args: Any) -> DatasetInfo:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, root: str | None, download: bool, **args: Any):  # pragma: no cover - abstract
        raise NotImplementedError


def _instance(name: str) -> Any:
    obj = DATASETS.get(name, 'dataset')
    return obj() if isinstance(obj, type) else obj


# --------------------------------------------------------------------------- public API


def dataset_info(name: str, **args: Any) -> DatasetInfo:
    """Metadata of dataset ``name`` (no data is loaded).

    ``args`` are the full ``dataset_args``: the loading arguments of :func:`load_dataset`
    (``root``, ``val_size``, ``seed``, ``limit_train``, ``download``) are accepted here too, so one
    dict configures both.
    """
    ds = _instance(name)
    own = dict(args)
    _check_load_args(**{k: own[k] for k in _LOAD_ARGS if k in own})
    for key in _LOAD_ARGS:
        if key in own and not (key == 'seed' and 'seed' in getattr(ds, 'args', {})) \
                and not (key == 'root' and getattr(ds, 'info_needs_root', False)):
            own.pop(key)
    own, generic = _split_generic(ds, own)
    return _check_generic(generic, ds.info(**own))


_LOAD_ARGS = ('root', 'val_size', 'seed', 'limit_train', 'download')


def _check_load_args(root: Any = None, val_size: Any = 0.1, seed: Any = 0, limit_train: Any = None,
                     download: Any = False) -> None:
    """Checks of :func:`load_dataset`'s own arguments that need no data (so ``nni-xfer check`` runs them)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError('dataset_args.seed', f'expected an integer, got {seed!r}')
    if not isinstance(download, bool):
        raise ConfigError('dataset_args.download', f'expected true or false, got {download!r}')
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise ConfigError('dataset_args.root', f'expected a path, got {root!r}')
    if limit_train is not None and (isinstance(limit_train, bool) or not isinstance(limit_train, int)
                                    or limit_train < 1):
        raise ConfigError('dataset_args.limit_train', f'expected a positive integer or null, got {limit_train!r}')
    _val_count(val_size, None)


def load_dataset(name: str, *, root: str | None = None, val_size: float | int = 0.1, seed: int = 0,
                 limit_train: int | None = None, download: bool = False, cache: bool | None = None,
                 **args: Any) -> Splits:
    """Load dataset ``name`` as normalised in-memory :class:`Splits` (a streamed dataset such as
    ``imagefolder`` returns :class:`~nni_xfer.data.imagefolder.StreamedSplits` instead).

    ``val_size`` (a fraction < 1 or an absolute count) examples are held out of the training
    split with a permutation seeded by ``seed``; ``limit_train`` then truncates the remaining
    training part. Images are normalised per channel with the mean/std of the training part
    (before truncation). The test split is the dataset's own and is never shuffled.
    A dataset that declares a ``seed`` argument (``synthetic``) receives ``seed`` too.

    The prepared splits (before ``limit_train``) are cached under ``$NNI_XFER_HOME/datasets``
    and memory-mapped by later calls (see :func:`cache_path`); ``cache=False`` or the environment
    variable ``NNI_XFER_DATASET_CACHE=0`` bypasses the cache.
    """
    ds = _instance(name)
    _check_load_args(root=root, val_size=val_size, seed=seed, limit_train=limit_train, download=download)
    if getattr(ds, 'streamed', False):  # read from disk batch by batch (imagefolder): never cached whole
        return ds.open(root, val_size=val_size, seed=seed, limit_train=limit_train, **args)
    if isinstance(getattr(ds, 'args', None), dict) and 'seed' in ds.args and 'seed' not in args:
        args['seed'] = seed
    if 'classes' in args and isinstance(args['classes'], tuple):
        args['classes'] = list(args['classes'])  # one cache key for a list and a tuple
    own, generic = _split_generic(ds, args)
    info = _check_generic(generic, ds.info(**own))
    root = os.path.expanduser(str(root)) if root is not None else None
    if cache is None:
        cache = os.environ.get('NNI_XFER_DATASET_CACHE', '1') not in ('0', 'false', 'no')
    if cache:
        path = cache_path(name, args, root=root, val_size=val_size, seed=seed, ds=ds)
        tensors = _cache_read(path)
        if tensors is None:
            with _cache_lock(path):
                tensors = _cache_read(path)  # another process may have built it meanwhile
                if tensors is None:
                    tensors = _prepare(ds, info, root, download, val_size, seed, args)
                    _cache_write(path, tensors, name)
                    tensors = _cache_read(path) or tensors
    else:
        tensors = _prepare(ds, info, root, download, val_size, seed, args)
    train_x, train_y = tensors['train_x'], tensors['train_y']
    if limit_train is not None:
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    return Splits(info, train_x, train_y, tensors['val_x'], tensors['val_y'], tensors['test_x'], tensors['test_y'])


def _prepare(ds: Any, info: DatasetInfo, root: str | None, download: bool, val_size: float | int, seed: int,
             args: dict) -> dict[str, torch.Tensor]:
    """The normalised splits of ``ds`` (the whole training part; ``limit_train`` is applied later)."""
    own, generic = _split_generic(ds, args)
    train_x, train_y, test_x, test_y = ds.load(root, download, **own)
    train_x, train_y = _as_images(train_x, info), _as_labels(train_y)
    test_x, test_y = _as_images(test_x, info), _as_labels(test_y)
    if generic:  # before the validation split and the normalisation statistics
        train_x, train_y = _apply_generic(generic, train_x, train_y)
        test_x, test_y = _apply_generic(generic, test_x, test_y)

    n = len(train_y)
    n_val = _val_count(val_size, n)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    val_x, val_y = train_x[val_idx], train_y[val_idx]
    train_x, train_y = train_x[train_idx], train_y[train_idx]

    mean = train_x.mean(dim=(0, 2, 3), dtype=torch.float64)
    std = train_x.std(dim=(0, 2, 3)).double().clamp_min(1e-6) if len(train_x) > 1 else torch.ones_like(mean)

    def norm(x: torch.Tensor) -> torch.Tensor:
        m = mean.float().view(1, -1, 1, 1)
        s = std.float().view(1, -1, 1, 1)
        return ((x - m) / s).contiguous()

    return {'train_x': norm(train_x), 'train_y': train_y.contiguous(), 'val_x': norm(val_x),
            'val_y': val_y.contiguous(), 'test_x': norm(test_x), 'test_y': test_y.contiguous()}


# --------------------------------------------------------------------------- cache

#: Version of the cache layout and of :func:`_prepare`'s recipe; part of every cache key.
CACHE_FORMAT = 1
_SPLIT_KEYS = ('train_x', 'train_y', 'val_x', 'val_y', 'test_x', 'test_y')
#: Cache files up to this size are checked against their SHA-256 on every read (larger: size only).
HASH_CHECK_MAX_BYTES = 64 << 20


def cache_dir() -> Path:
    """``$NNI_XFER_HOME/datasets`` (``~/.nni-xfer/datasets``)."""
    return Path(os.environ.get('NNI_XFER_HOME', Path.home() / '.nni-xfer')) / 'datasets'


def cache_path(name: str, dataset_args: dict | None = None, *, root: str | None = None,
               val_size: float | int = 0.1, seed: int = 0, ds: Any = None) -> Path:
    """The cache file of dataset ``name`` prepared with its own ``dataset_args`` and the loading
    arguments ``root``, ``val_size``, ``seed`` (``limit_train`` and ``download`` do not change it).

    The key hashes the dataset's name and ``version`` attribute (a dataset bumps ``version`` when
    what its ``load`` returns changes), the arguments and :data:`CACHE_FORMAT`.
    """
    import hashlib
    import json

    ds = ds if ds is not None else _instance(name)
    args = {'dataset_args': dict(dataset_args or {}), 'val_size': val_size, 'seed': seed,
            'root': os.path.abspath(os.path.expanduser(str(root))) if root is not None else None}
    key = json.dumps({'dataset': name, 'version': getattr(ds, 'version', 1), 'format': CACHE_FORMAT,
                      'class': f'{type(ds).__module__}.{type(ds).__qualname__}', 'args': args},
                     sort_keys=True, default=str)
    return cache_dir() / f'{name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt'


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + '.done')


def _cache_read(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached splits, memory-mapped; ``None`` when missing, incomplete or damaged.

    A file counts only with its completion marker (written after the data file is in place),
    whose size (and, for files up to :data:`HASH_CHECK_MAX_BYTES`, SHA-256) must match."""
    import json

    try:
        marker = json.loads(_marker(path).read_text())
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get('size') != size or marker.get('format') != CACHE_FORMAT:
        return None
    if size <= HASH_CHECK_MAX_BYTES and marker.get('sha256') != _file_sha256(path):
        return None
    try:
        data = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a damaged file is rebuilt
        return None
    if not isinstance(data, dict) or any(not isinstance(data.get(k), torch.Tensor) for k in _SPLIT_KEYS):
        return None
    return {k: data[k] for k in _SPLIT_KEYS}


def _cache_write(path: Path, tensors: dict[str, torch.Tensor], name: str) -> None:
    """Write the cache file and then its marker, each to a temporary file renamed into place."""
    import json
    import tempfile
    import time

    def prepare_dir() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _marker(path).unlink(missing_ok=True)  # a damaged file in place: no marker until the new one is in
        for stale in path.parent.glob(f'.{path.name}*.tmp'):  # left by killed builders
            try:
                if time.time() - stale.stat().st_mtime > 60:
                    stale.unlink()
            except OSError:
                pass

    def atomic(target: Path, write) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{target.name}.', suffix='.tmp')
        try:
            with os.fdopen(fd, 'wb') as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    try:
        prepare_dir()
        atomic(path, lambda f: torch.save({k: tensors[k] for k in _SPLIT_KEYS}, f))
        meta = {'dataset': name, 'format': CACHE_FORMAT, 'size': path.stat().st_size,
                'sha256': _file_sha256(path), 'shapes': {k: list(tensors[k].shape) for k in _SPLIT_KEYS}}
        atomic(_marker(path), lambda f: f.write(json.dumps(meta).encode()))
    except OSError as exc:  # a read-only or full disk: the trial goes on with the data in memory
        import warnings
        warnings.warn(f'dataset cache {path} not written: {exc}', stacklevel=3)


class _cache_lock:
    """An exclusive ``flock`` on ``<cache file>.lock`` so that concurrent trials build a dataset
    once (the others wait, then read the file); released by the kernel if the builder dies.
    Without ``fcntl`` or a writable directory it locks nothing (each process builds, and the
    atomic renames keep the file whole)."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + '.lock')
        self.fd: int | None = None

    def __enter__(self):
        try:
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None
        return False


def _val_count(val_size: Any, n: int | None) -> int:
    """Validation examples out of ``n`` training images (``n=None``: check the value's form only)."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ConfigError('dataset_args.val_size', f'expected a fraction in (0, 1) or a count, got {val_size!r}')
    if isinstance(val_size, float) and val_size < 1:
        if val_size <= 0:
            raise ConfigError('dataset_args.val_size', f'must be > 0, got {val_size!r}')
        count = max(1, int(round(val_size * n))) if n is not None else 1
    else:
        if val_size != int(val_size):
            raise ConfigError('dataset_args.val_size', f'expected a fraction in (0, 1) or a whole number of '
                                                       f'images, got {val_size!r}')
        count = int(val_size)
    if count < 1 or (n is not None and count >= n):
        raise ConfigError('dataset_args.val_size',
                          f'{val_size!r} leaves no training or no validation data out of {n} training images')
    return count


def _as_images(x: Any, info: DatasetInfo) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4:
        raise ValueError(f'dataset {info.name!r}: images must be (N, C, H, W) or (N, H, W), got {tuple(t.shape)}')
    return t.float()


def _as_labels(y: Any) -> torch.Tensor:
    if isinstance(y, np.ndarray):
        y = np.ascontiguousarray(y)
    return torch.as_tensor(y).long().view(-1)


