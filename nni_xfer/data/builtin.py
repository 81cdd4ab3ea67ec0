"""The built-in in-memory datasets: ``digits`` (embedded), ``fashion_mnist`` (Debian's
``dataset-fashion-mnist`` or a download), ``cifar10``, ``cifar100``, ``svhn`` (torchvision
downloaders) and ``synthetic``.

Each implements the contract of :mod:`nni_xfer.data.pipeline` (``info`` and ``load``) and is
registered in :data:`nni_xfer.registry.DATASETS`; the pipeline does splitting, normalisation and
caching for all of them.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import DATASETS
from .pipeline import FASHION_MNIST_SYSTEM_DIR, DatasetInfo, ImageDataset, _positive, default_root

__all__ = ['Digits', 'FashionMNIST', 'CIFAR10', 'CIFAR100', 'SVHN', 'Synthetic']

# --------------------------------------------------------------------------- digits


@DATASETS.register('digits', description='scikit-learn 8x8 handwritten digits (1,797 images, embedded)')
class Digits(ImageDataset):
    """scikit-learn 8x8 handwritten digits (1,797 images, embedded)."""

    name = 'digits'
    args: dict[str, Any] = {}

    def info(self, **args: Any) -> DatasetInfo:
        self.check_args(**args)
        return DatasetInfo('digits', 1, 8, 10, pad=1, flip=False,
                           description='scikit-learn 8x8 grayscale handwritten digits, 10 classes')

    def load(self, root: str | None, download: bool, **args: Any):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        self.check_args(**args)
        data = load_digits()
        x = data.images.astype(np.float32)  # (1797, 8, 8), values 0..16
        y = data.target.astype(np.int64)
        # fixed 80/20 split, independent of the validation seed
        tr_x, te_x, tr_y, te_y = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
        return tr_x, tr_y, te_x, te_y


# --------------------------------------------------------------------------- fashion-mnist


_FMNIST_FILES = {
    'train_x': 'train-images-idx3-ubyte',
    'train_y': 'train-labels-idx1-ubyte',
    'test_x': 't10k-images-idx3-ubyte',
    'test_y': 't10k-labels-idx1-ubyte',
}


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (optionally gzipped): big-endian header, then uint8 payload."""
    opener = gzip.open if path.suffix == '.gz' else open
    with opener(path, 'rb') as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f'{path}: not an unsigned-byte idx file')
    ndim = data[3]
    dims = np.frombuffer(data, dtype='>u4', count=ndim, offset=4).astype(np.int64)
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f'{path}: expected {int(np.prod(dims))} values, found {arr.size}')
    return arr.reshape(tuple(int(d) for d in dims)).copy()  # writable, owns its memory


def _find_idx_files(directory: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in _FMNIST_FILES.items():
        for candidate in (directory / stem, directory / f'{stem}.gz'):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


@DATASETS.register('fashion_mnist', description='Fashion-MNIST 28x28 grayscale clothing images (70,000)')
class FashionMNIST(ImageDataset):
    """Fashion-MNIST 28x28 grayscale clothing images (70,000)."""

    name = 'fashion_mnist'
    args: dict[str, Any] = {}
    system_dir = FASHION_MNIST_SYSTEM_DIR

    def info(self, **args: Any) -> DatasetInfo:
        self.check_args(**args)
        return DatasetInfo('fashion_mnist', 1, 28, 10, pad=2, flip=True,
                           description='Fashion-MNIST 28x28 grayscale clothing images, 10 classes')

    def search_dirs(self, root: str | None) -> list[Path]:
        dirs = []
        if root is not None:
            r = Path(root)
            dirs += [r, r / 'fashion-mnist', r / 'FashionMNIST' / 'raw']
        dirs.append(Path(self.system_dir))
        r = Path(root if root is not None else default_root())
        dirs.append(r / 'FashionMNIST' / 'raw')
        return dirs

    def available(self, root: str | None = None) -> bool:
        """Whether the idx files can be found without downloading."""
        return any(_find_idx_files(d) is not None for d in self.search_dirs(root))

    def load(self, root: str | None, download: bool, **args: Any):
        self.check_args(**args)
        dirs = self.search_dirs(root)
        for d in dirs:
            files = _find_idx_files(d)
            if files is not None:
                return tuple(_read_idx(files[k]) for k in ('train_x', 'train_y', 'test_x', 'test_y'))
        tv_root = root if root is not None else default_root()
        if download:
            try:
                from torchvision.datasets import FashionMNIST as TVFashionMNIST

                train = TVFashionMNIST(tv_root, train=True, download=True)
                test = TVFashionMNIST(tv_root, train=False, download=True)
                return train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()
            except Exception as exc:  # network errors, corrupt archives
                raise ConfigError('dataset', f'cannot download fashion_mnist to {tv_root}: '
                                  f'{" ".join(str(exc).split())}') from exc
        searched = ', '.join(str(d) for d in dirs)
        raise ConfigError('dataset', f'fashion_mnist files not found in {searched}; install Debian package '
                          'dataset-fashion-mnist or pass dataset_args.download: true')


# --------------------------------------------------------------------------- torchvision sets


class _TorchvisionDataset(ImageDataset):
    args: dict[str, Any] = {}
    meta: DatasetInfo

    def info(self, **args: Any) -> DatasetInfo:
        self.check_args(**args)
        return self.meta

    def _open(self, root: str, train: bool, download: bool):  # pragma: no cover - abstract
        raise NotImplementedError

    def _arrays(self, ds) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(ds.data)
        if x.ndim == 4 and x.shape[-1] in (1, 3):  # NHWC -> NCHW
            x = x.transpose(0, 3, 1, 2)
        y = np.asarray(ds.targets if hasattr(ds, 'targets') else ds.labels)
        return np.ascontiguousarray(x), y.astype(np.int64)

    def load(self, root: str | None, download: bool, **args: Any):
        self.check_args(**args)
        root = root if root is not None else default_root()
        try:
            train = self._open(root, True, download)
            test = self._open(root, False, download)
        except ConfigError:
            raise
        except RuntimeError as exc:
            if download:
                raise ConfigError('dataset', f'cannot load {self.name} from {root}: '
                                  f'{" ".join(str(exc).split())}') from exc
            raise ConfigError('dataset', f'{self.name} files not found under {root}; set '
                              'dataset_args.download: true to download them (or dataset_args.root)') from exc
        except Exception as exc:  # network errors while downloading
            raise ConfigError('dataset', f'cannot download {self.name} to {root}: '
                              f'{" ".join(str(exc).split())}') from exc
        return (*self._arrays(train), *self._arrays(test))


@DATASETS.register('cifar10', description='CIFAR-10 32x32 colour images, 10 classes (torchvision)')
class CIFAR10(_TorchvisionDataset):
    """CIFAR-10 32x32 colour images, 10 classes (torchvision)."""

    name = 'cifar10'
    meta = DatasetInfo('cifar10', 3, 32, 10, pad=4, flip=True, description='CIFAR-10 32x32 colour images, 10 classes')

    def _open(self, root: str, train: bool, download: bool):
        from torchvision.datasets import CIFAR10 as TV

        return TV(root, train=train, download=download)


@DATASETS.register('cifar100', description='CIFAR-100 32x32 colour images, 100 classes (torchvision)')
class CIFAR100(_TorchvisionDataset):
    """CIFAR-100 32x32 colour images, 100 classes (torchvision)."""

    name = 'cifar100'
    meta = DatasetInfo('cifar100', 3, 32, 100, pad=4, flip=True,
                       description='CIFAR-100 32x32 colour images, 100 classes')

    def _open(self, root: str, train: bool, download: bool):
        from torchvision.datasets import CIFAR100 as TV

        return TV(root, train=train, download=download)


@DATASETS.register('svhn', description='SVHN 32x32 house-number digits, 10 classes (torchvision)')
class SVHN(_TorchvisionDataset):
    """SVHN 32x32 house-number digits, 10 classes (torchvision)."""

    name = 'svhn'
    meta = DatasetInfo('svhn', 3, 32, 10, pad=4, flip=False, description='SVHN 32x32 house-number digits, 10 classes')

    def _open(self, root: str, train: bool, download: bool):
        from torchvision.datasets import SVHN as TV

        return TV(os.path.join(root, 'svhn'), split='train' if train else 'test', download=download)


# --------------------------------------------------------------------------- synthetic


@DATASETS.register('synthetic', description='deterministic random learnable images for tests')
class Synthetic(ImageDataset):
    """Deterministic random learnable images for tests."""

    name = 'synthetic'
    args: dict[str, Any] = {'num_samples': 256, 'image_size': 8, 'in_channels': 1, 'num_classes': 4, 'seed': 0}

    def info(self, **args: Any) -> DatasetInfo:
        a = self.check_args(**args)
        _positive('num_samples', a['num_samples'], 2)
        _positive('image_size', a['image_size'])
        _positive('in_channels', a['in_channels'])
        _positive('num_classes', a['num_classes'], 2)
        return DatasetInfo('synthetic', a['in_channels'], a['image_size'], a['num_classes'],
                           pad=max(1, a['image_size'] // 8), flip=False,
                           description='class-dependent mean pattern plus Gaussian noise')

    def load(self, root: str | None, download: bool, **args: Any):
        a = self.check_args(**args)
        self.info(**args)
        c, s, k = a['in_channels'], a['image_size'], a['num_classes']
        n_train = a['num_samples']
        n_test = max(k, n_train // 4)
        gen = torch.Generator().manual_seed(a['seed'])
        # one smooth-ish pattern per class: low-resolution noise upsampled to the image size
        low = max(2, s // 2)
        patterns = torch.randn(k, c, low, low, generator=gen)
        patterns = torch.nn.functional.interpolate(patterns, size=(s, s), mode='bilinear', align_corners=False)
        patterns = 2.0 * patterns / patterns.flatten(1).std(dim=1).clamp_min(1e-6).view(k, 1, 1, 1)

        def draw(n: int):
            y = torch.arange(n) % k
            y = y[torch.randperm(n, generator=gen)]
            x = patterns[y] + torch.randn(n, c, s, s, generator=gen)
            return x, y

        train_x, train_y = draw(n_train)
        test_x, test_y = draw(n_test)
        return train_x, train_y, test_x, test_y
