"""``imagefolder``: a user's own image folders, streamed from disk (never loaded whole into memory).

The layout is torchvision's ``ImageFolder`` one, with two splits under ``dataset_args.root``::

    root/train/<class>/<image>      # training images; val_size of them are held out for validation
    root/val/<class>/<image>        # the test split (ImageNet's "val"), never used by the search

Training images get the EAT-NAS paper's augmentation (RandomResizedCrop with scale ``crop_scale``..1,
0.2 by default, and horizontal flips); validation and test images are resized to ``image_size / 0.875``
and centre-cropped. Images are normalised with ImageNet's channel mean/std (``normalize: imagenet``) or
left in [0, 1] (``normalize: none``). Batches come from ``torch.utils.data.DataLoader`` with ``workers``
processes (:class:`StreamedSplits`; :class:`nni_xfer.training.trainer.Trainer` streams them).

One config line for an ImageNet-like task::

    dataset: imagefolder
    dataset_args: {root: /data/imagenet, val_size: 50000}

Bad folders are one-line :class:`~nni_xfer.errors.ConfigError` naming the key, at ``nni-xfer check``
and trial start: a missing folder, a split without class folders, an empty class, classes that differ
between the splits. A machine that submits trials elsewhere (remote, Kubernetes) and does not see the
data sets ``num_classes`` so that the check needs no folder there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .pipeline import DatasetInfo, ImageDataset, _positive, _val_count
from ..errors import ConfigError
from ..registry import DATASETS

__all__ = ['StreamedSplits', 'ImageFolderDataset', 'IMAGE_EXTENSIONS', 'scan_classes']

#: File suffixes counted as images (torchvision's ImageFolder accepts the same).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_FRACTION = 0.875  # resize to size / 0.875, centre-crop size (224 <- 256)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def scan_classes(folder: Path, key: str) -> list[str]:
    """Sorted class folder names of one split; errors name ``key`` (``dataset_args.root`` / ``.train_dir``…).

    Each class folder must hold at least one image (the scan stops at the first one, so an ImageNet-sized
    folder is checked in well under a second)."""
    if not folder.is_dir():
        raise ConfigError(key, f'no such folder: {folder}')
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith('.'))
    if not classes:
        raise ConfigError(key, f'{folder} has no class folders (expected {folder}/<class>/<image>)')
    for name in classes:
        if not _has_image(folder / name):
            raise ConfigError(key, f'class folder {folder / name} has no images '
                                   f'(allowed extensions: {", ".join(IMAGE_EXTENSIONS)})')
    return classes


def _has_image(folder: Path) -> bool:
    for dirpath, _, files in os.walk(folder, followlinks=True):
        if any(_is_image(f) for f in files):
            return True
    return False


class _Transformed(torch.utils.data.Dataset):
    """``base[indices[i]]`` (a PIL image and its label) through ``transform``."""

    def __init__(self, base: Any, indices: Sequence[int] | None, transform: Any):
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.base[int(i) if self.indices is None else int(self.indices[i])]
        return self.transform(image), label

    @property
    def labels(self) -> torch.Tensor:
        """All labels, from the file list (no image is read)."""
        targets = torch.as_tensor(self.base.targets, dtype=torch.long)
        return targets if self.indices is None else targets[torch.as_tensor(self.indices, dtype=torch.long)]


class _EpochBatches(torch.utils.data.Sampler):
    """Batches of indices for one epoch: a fresh seeded permutation each epoch (``shuffle``), a last
    batch of one image merged away (it would break BatchNorm) — the same plan as the in-memory trainer."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None):
        self.n, self.batch_size, self.shuffle, self.generator = n, batch_size, shuffle, generator

    def plan(self) -> list[tuple[int, int]]:
        full, rest = divmod(self.n, self.batch_size)
        batches = [(i * self.batch_size, self.batch_size) for i in range(full)]
        if rest > 1 or (rest == 1 and full == 0) or (rest == 1 and not self.shuffle):
            batches.append((full * self.batch_size, rest))
        return batches

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[list[int]]:
        order = (torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)).tolist()
        for start, size in self.plan():
            yield order[start:start + size]


@dataclass(repr=False)
class StreamedSplits:
    """Three splits read from disk batch by batch (the streamed counterpart of :class:`~nni_xfer.data.pipeline.Splits`).

    ``train``, ``val`` and ``test`` are map-style datasets of ``(image tensor, label)``; :meth:`loader`
    wraps one in a DataLoader with ``workers`` processes."""

    info: DatasetInfo
    train: Any
    val: Any
    test: Any
    workers: int = 0
    streamed = True

    def to(self, device: torch.device | str) -> 'StreamedSplits':
        """Data stays on disk; batches move to the device as they are used."""
        return self

    @property
    def device(self) -> torch.device:
        return torch.device('cpu')

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.info.in_channels, self.info.image_size, self.info.image_size)

    def size(self, split: str) -> int:
        return len(getattr(self, split))

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
               pin_memory: bool = False, persistent: bool = False) -> torch.utils.data.DataLoader:
        ds = getattr(self, split)
        sampler = _EpochBatches(len(ds), batch_size, shuffle, generator)
        workers = self.workers
        return torch.utils.data.DataLoader(
            ds, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
            persistent_workers=persistent and workers > 0, generator=generator,
            prefetch_factor=4 if workers > 0 else None)

    def batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` of a split in file order (evaluation)."""
        yield from self.loader(split, batch_size)

    def without_augmentation(self) -> 'StreamedSplits':
        """The same splits with the evaluation transform on training images (``evaluator_args.augment: false``)."""
        train = _Transformed(self.train.base, self.train.indices, self.val.transform)
        return StreamedSplits(self.info, train, self.val, self.test, workers=self.workers)

    def sample_images(self, n: int) -> torch.Tensor:
        """The first ``n`` training images with the evaluation transform (deterministic; BN calibration)."""
        ds = self.train
        view = _Transformed(ds.base, list(ds.indices[:n]) if ds.indices is not None else list(range(n)),
                            self.val.transform)
        return torch.stack([view[i][0] for i in range(min(n, len(view)))])

    def __repr__(self) -> str:
        return (f'StreamedSplits({self.info.name!r}, train={len(self.train)}, val={len(self.val)}, '
                f'test={len(self.test)}, shape={self.input_shape}, workers={self.workers})')


@DATASETS.register('imagefolder', description="your own train/val image folders (torchvision ImageFolder layout), "
                                              "streamed with DataLoader workers")
class ImageFolderDataset(ImageDataset):
    """A user's image folders, streamed (see the module docstring)."""

    name = 'imagefolder'
    streamed = True
    #: ``info`` needs ``dataset_args.root`` (to count the classes) unless ``num_classes`` is given
    info_needs_root = True
    args: dict[str, Any] = {'train_dir': 'train', 'test_dir': 'val', 'image_size': 224, 'num_classes': 0,
                            'crop_scale': 0.2, 'workers': -1, 'normalize': 'imagenet', 'check_folders': True}

    def _checked(self, root: Any, args: dict[str, Any]) -> dict[str, Any]:
        a = self.check_args(**args)
        _positive('image_size', a['image_size'], 8)
        if a['num_classes'] < 0 or a['num_classes'] == 1:
            raise ConfigError('dataset_args.num_classes', f'expected 0 (count the class folders) or >= 2, '
                                                          f'got {a["num_classes"]!r}')
        if not 0 < a['crop_scale'] <= 1:
            raise ConfigError('dataset_args.crop_scale', f'expected a fraction in (0, 1], got {a["crop_scale"]!r}')
        if a['workers'] < -1:
            raise ConfigError('dataset_args.workers', f'expected -1 (auto) or >= 0, got {a["workers"]!r}')
        if a['normalize'] not in ('imagenet', 'none'):
            raise ConfigError('dataset_args.normalize', f'unknown value {a["normalize"]!r}', allowed=['imagenet', 'none'])
        for key in ('train_dir', 'test_dir'):
            if not isinstance(a[key], str) or not a[key]:
                raise ConfigError(f'dataset_args.{key}', f'expected a folder name or path, got {a[key]!r}')
        return a

    def folders(self, root: Any, a: dict[str, Any]) -> tuple[Path, Path]:
        if root is None:
            raise ConfigError('dataset_args.root', 'imagefolder needs the folder holding the train/ and val/ '
                                                   'class folders')
        base = Path(os.path.expanduser(str(root)))
        if not base.is_dir():
            raise ConfigError('dataset_args.root', f'no such folder: {base}')
        return base / a['train_dir'], base / a['test_dir']

    def classes(self, root: Any, a: dict[str, Any]) -> list[str]:
        """The class names, checked: both splits exist, no empty class, the same classes in both."""
        train_dir, test_dir = self.folders(root, a)
        train = scan_classes(train_dir, 'dataset_args.train_dir')
        test = scan_classes(test_dir, 'dataset_args.test_dir')
        if train != test:
            missing, extra = sorted(set(train) - set(test)), sorted(set(test) - set(train))
            parts = ([f'missing {", ".join(missing[:5])}{" …" if len(missing) > 5 else ""}'] if missing else []) + \
                    ([f'not in {a["train_dir"]}: {", ".join(extra[:5])}{" …" if len(extra) > 5 else ""}'] if extra else [])
            raise ConfigError('dataset_args.test_dir', f'{test_dir} has other classes than {train_dir}: '
                                                       f'{"; ".join(parts)}')
        if a['num_classes'] and a['num_classes'] != len(train):
            raise ConfigError('dataset_args.num_classes', f'{a["num_classes"]} given but {train_dir} has '
                                                          f'{len(train)} class folders')
        return train

    def info(self, root: Any = None, **args: Any) -> DatasetInfo:
        a = self._checked(root, args)
        if a['num_classes'] and (root is None or not a['check_folders']):
            k = a['num_classes']  # the data lives where the trials run
        else:
            k = len(self.classes(root, a))
        return self._info(root, a, k)

    @staticmethod
    def _info(root: Any, a: dict[str, Any], k: int) -> DatasetInfo:
        return DatasetInfo('imagefolder', 3, a['image_size'], k, pad=0, flip=True,
                           description=f'image folders{f" under {root}" if root else ""} ({k} classes), streamed')

    def load(self, root: str | None, download: bool, **args: Any):
        raise ConfigError('dataset', 'imagefolder is streamed: use load_dataset (it returns StreamedSplits)')

    def open(self, root: Any, *, val_size: float | int, seed: int, limit_train: int | None,
             **args: Any) -> StreamedSplits:
        from torchvision import datasets as tvd
        from torchvision import transforms as T

        a = self._checked(root, args)
        classes = self.classes(root, a)  # checks the folders once; info below reuses the scan
        info = self._info(root, a, len(classes))
        train_dir, test_dir = self.folders(root, a)
        try:
            train_base = tvd.ImageFolder(str(train_dir))
            test_base = tvd.ImageFolder(str(test_dir))
        except (FileNotFoundError, OSError) as exc:  # a race with the check above, or unreadable files
            raise ConfigError('dataset_args.root', ' '.join(str(exc).split())) from exc
        if train_base.classes != classes or test_base.classes != classes:
            raise ConfigError('dataset_args.root', f'the class folders changed while reading {root}')
        n = len(train_base)
        n_val = _val_count(val_size, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        if limit_train is not None:
            train_idx = train_idx[:limit_train]
        size = a['image_size']
        norm = [T.Normalize(IMAGENET_MEAN, IMAGENET_STD)] if a['normalize'] == 'imagenet' else []
        train_tf = T.Compose([T.RandomResizedCrop(size, scale=(a['crop_scale'], 1.0)), T.RandomHorizontalFlip(),
                              T.ToTensor(), *norm])
        eval_tf = T.Compose([T.Resize(int(round(size / EVAL_CROP_FRACTION))), T.CenterCrop(size), T.ToTensor(), *norm])
        workers = a['workers'] if a['workers'] >= 0 else min(8, len(os.sched_getaffinity(0)))
        return StreamedSplits(info, _Transformed(train_base, train_idx, train_tf),
                              _Transformed(train_base, val_idx, eval_tf), _Transformed(test_base, None, eval_tf),
                              workers=workers)
