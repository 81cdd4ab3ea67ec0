"""The ``imagefolder`` dataset: a user's own train/val folders, streamed through DataLoader workers.

The folders are written here from real data (scikit-learn's digits, upscaled to 16x16 PNG files)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_xfer.config import check_config
from nni_xfer.data.pipeline import dataset_info, load_dataset
from nni_xfer.errors import ConfigError
from nni_xfer.data.imagefolder import StreamedSplits
from nni_xfer.training.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[4]


def write_folders(root: Path, classes=(0, 1, 2), per_class_train=20, per_class_val=5, size=16) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    for split, per in (('train', per_class_train), ('val', per_class_val)):
        for k in classes:
            folder = root / split / f'class_{k}'
            folder.mkdir(parents=True, exist_ok=True)
            idx = np.flatnonzero(d.target == k)
            picks = idx[:per] if split == 'train' else idx[-per:]
            for j, i in enumerate(picks):
                img = (d.images[i] * (255 / 16)).astype(np.uint8)
                Image.fromarray(img).resize((size, size), Image.BILINEAR).convert('RGB').save(folder / f'{j}.png')
    return root


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    return write_folders(tmp_path_factory.mktemp('imgs'))


def test_info_counts_classes_and_checks_folders(folders, tmp_path):
    info = dataset_info('imagefolder', root=str(folders), image_size=16)
    assert (info.in_channels, info.image_size, info.num_classes) == (3, 16, 3)

    def error(**args):
        with pytest.raises(ConfigError) as e:
            dataset_info('imagefolder', **args)
        return str(e.value)

    assert error(root=str(tmp_path / 'nope')).startswith('dataset_args.root: no such folder')
    assert error().startswith('dataset_args.root: imagefolder needs')
    assert error(root=str(folders), train_dir='training').startswith('dataset_args.train_dir: no such folder')
    assert error(root=str(folders), num_classes=5).startswith('dataset_args.num_classes: 5 given but')
    assert error(root=str(folders), crop_scale=0.0).startswith('dataset_args.crop_scale')
    assert error(root=str(folders), normalize='z').startswith("dataset_args.normalize: unknown value 'z'")
    assert error(root=str(folders), colour=1).startswith('dataset_args.colour: unknown argument')
    # an empty class and classes that differ between the splits
    bad = write_folders(tmp_path / 'bad', classes=(0, 1), per_class_train=2, per_class_val=1)
    (bad / 'train' / 'class_7').mkdir()
    (bad / 'train' / 'class_7' / 'notes.txt').write_text('no images here')
    msg = error(root=str(bad))
    assert msg.startswith('dataset_args.train_dir: class folder') and 'class_7 has no images' in msg
    (bad / 'train' / 'class_7' / 'notes.txt').unlink()
    (bad / 'train' / 'class_7').rmdir()
    (bad / 'val' / 'class_1').rename(bad / 'val' / 'class_9')
    msg = error(root=str(bad))
    assert msg.startswith('dataset_args.test_dir:') and 'missing class_1' in msg and 'class_9' in msg
    assert '\n' not in msg
    # a submitting machine without the data: num_classes and check_folders: false
    assert dataset_info('imagefolder', root='/data/elsewhere', num_classes=1000, check_folders=False).num_classes == 1000


def test_streamed_splits_read_images_lazily(folders, monkeypatch):
    from torchvision.datasets import folder as tvf
    reads = []
    real = tvf.pil_loader  # what ImageFolder's default loader calls for each image
    monkeypatch.setattr(tvf, 'pil_loader', lambda p: reads.append(p) or real(p))
    s = load_dataset('imagefolder', root=str(folders), image_size=16, val_size=6, seed=3, workers=0)
    assert isinstance(s, StreamedSplits) and s.streamed
    assert (s.size('train'), s.size('val'), s.size('test')) == (54, 6, 15)
    assert reads == []  # nothing read until a batch is asked for
    assert not any(isinstance(v, torch.Tensor) for v in vars(s).values())
    x, y = next(iter(s.loader('train', 8, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    assert len(reads) == 8
    assert -3 < float(x.mean()) < 3  # ImageNet normalisation
    # the split is seeded and disjoint; limit_train truncates the training part only
    again = load_dataset('imagefolder', root=str(folders), image_size=16, val_size=6, seed=3, limit_train=10)
    assert list(again.val.indices) == list(s.val.indices) and again.size('train') == 10
    assert not set(s.val.indices) & set(s.train.indices)
    assert s.sample_images(4).shape == (4, 3, 16, 16)


def test_trainer_streams_and_learns(folders):
    """Real training through DataLoader workers: deterministic, and well above chance (1/3)."""
    def run():
        s = load_dataset('imagefolder', root=str(folders), image_size=16, val_size=9, seed=0, workers=1,
                         crop_scale=0.6)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 3))
        trainer = Trainer(TrainConfig(epochs=6, batch_size=8, lr=0.05, device='cpu', seed=0))
        result = trainer.fit(model, s)
        return result, trainer.evaluate_split(model, s, 'test')
    (r1, t1), (r2, t2) = run(), run()
    assert r1.val_acc == r2.val_acc and t1 == t2
    assert [h.train_loss for h in r1.history] == [h.train_loss for h in r2.history]
    assert t1 > 0.6, (r1.val_acc, t1)
    assert r1.history[-1].train_loss < r1.history[0].train_loss


def test_eatnas_trial_on_imagefolder(folders, tmp_path):
    """One real trial of the EAT-NAS space on the folders (the paper's large-task path, in miniature)."""
    from nni_xfer.runtime.trial import Reporter, run_trial

    class Quiet(Reporter):
        def intermediate(self, m):
            pass

        def final(self, m):
            pass

    from nni_xfer.search_spaces.mbv2_blocks import example
    arch = example()
    spec = {'space': 'mbv2_blocks', 'architecture': arch, 'dataset': 'imagefolder',
            'space_args': {'stem_channels': 8, 'head_channels': 32},
            'dataset_args': {'root': str(folders), 'image_size': 16, 'val_size': 9, 'workers': 0},
            'evaluator': 'train', 'evaluator_args': {'epochs': 1, 'batch_size': 16, 'device': 'cpu'},
            'proposal_id': 0, 'experiment_id': 'imgf', 'checkpoint_root': str(tmp_path / 'ckpt'), 'seed': 0}
    metrics = run_trial(spec, reporter=Quiet())
    assert 0.0 <= metrics['default'] <= 1.0 and metrics['flops'] > 0 and 'inherited_acc' in metrics


def test_paper_scale_imagenet_example_uses_imagefolder():
    import yaml
    path = ROOT / 'examples' / 'eatnas' / 'imagenet.yml'
    cfg = yaml.safe_load(path.read_text())['tuner']['classArgs']
    assert cfg['dataset'] == 'imagefolder'
    assert check_config(path) == []
