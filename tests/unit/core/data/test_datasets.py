"""In-memory datasets: shapes, normalisation, splits, errors."""
from __future__ import annotations

import pytest
import torch

from nni_xfer.data.builtin import Digits as D_Digits
from nni_xfer.data.builtin import FashionMNIST
from nni_xfer.data.pipeline import DatasetInfo, Splits, dataset_info, load_dataset
from nni_xfer.errors import ConfigError
from nni_xfer.registry import DATASETS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope='module')
def digits() -> Splits:
    return load_dataset('digits')


def test_registered():
    for name in ('digits', 'fashion_mnist', 'cifar10', 'cifar100', 'svhn', 'synthetic'):
        assert name in DATASETS


def test_dataset_info_without_loading():
    info = dataset_info('digits')
    assert info == DatasetInfo('digits', 1, 8, 10, 1, False, info.description)
    assert dataset_info('fashion_mnist').image_size == 28
    assert dataset_info('fashion_mnist').flip is True
    c10 = dataset_info('cifar10')
    assert (c10.in_channels, c10.image_size, c10.num_classes, c10.pad, c10.flip) == (3, 32, 10, 4, True)
    assert dataset_info('cifar100').num_classes == 100
    assert dataset_info('svhn').flip is False
    assert dataset_info('synthetic', num_classes=7, image_size=12).num_classes == 7


def test_digits_shapes(digits: Splits):
    n_train, n_val, n_test = len(digits.train_y), len(digits.val_y), len(digits.test_y)
    assert n_train + n_val + n_test == 1797
    assert n_test == 360
    assert n_val == round(0.1 * (1797 - 360))
    for x, y, n in ((digits.train_x, digits.train_y, n_train), (digits.val_x, digits.val_y, n_val),
                    (digits.test_x, digits.test_y, n_test)):
        assert x.shape == (n, 1, 8, 8) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert int(y.min()) >= 0 and int(y.max()) <= 9


def test_digits_normalised_with_train_stats(digits: Splits):
    assert abs(float(digits.train_x.mean())) < 1e-4
    assert abs(float(digits.train_x.std()) - 1) < 1e-3
    # val/test use the train statistics, so they are only approximately standardised
    assert abs(float(digits.val_x.mean())) < 0.3
    assert abs(float(digits.test_x.mean())) < 0.3


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r.numpy().tobytes()) for r in x.flatten(1)}


def test_val_split_disjoint_and_deterministic(digits: Splits):
    again = load_dataset('digits', seed=0)
    assert torch.equal(again.val_x, digits.val_x) and torch.equal(again.train_y, digits.train_y)
    other = load_dataset('digits', seed=1)
    assert not torch.equal(other.val_y, digits.val_y) or not torch.equal(other.val_x, digits.val_x)
    # the test split never depends on the seed
    assert torch.equal(other.test_y, digits.test_y)
    # train and val come from disjoint examples (digits has a few duplicate images; allow them)
    overlap = _rows(digits.train_x) & _rows(digits.val_x)
    assert len(overlap) <= 3


def test_val_size_count_and_limit_train():
    s = load_dataset('digits', val_size=100, limit_train=200)
    assert len(s.val_y) == 100 and len(s.train_y) == 200


def test_synthetic_deterministic_and_args():
    a = load_dataset('synthetic', num_samples=64, image_size=6, in_channels=3, num_classes=3)
    b = load_dataset('synthetic', num_samples=64, image_size=6, in_channels=3, num_classes=3)
    assert a.train_x.shape[1:] == (3, 6, 6)
    assert len(a.train_y) + len(a.val_y) == 64
    assert torch.equal(a.train_x, b.train_x)
    assert set(a.train_y.tolist()) <= {0, 1, 2}
    c = load_dataset('synthetic', num_samples=64, image_size=6, in_channels=3, num_classes=3, seed=5)
    assert not torch.equal(a.test_x, c.test_x)


def test_splits_to_device(digits: Splits):
    moved = digits.to('cpu')
    assert moved.train_x.device.type == 'cpu' and moved.info == digits.info
    assert 'digits' in repr(digits)


def test_unknown_dataset_names_field():
    with pytest.raises(ConfigError) as e:
        load_dataset('imagenet-1m')
    assert e.value.field == 'dataset'
    assert 'digits' in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(ConfigError, match='^dataset: '):
        dataset_info('nope')


@pytest.mark.parametrize('kwargs, field', [
    ({'val_size': 0}, 'dataset_args.val_size'),
    ({'val_size': 1.0e9}, 'dataset_args.val_size'),
    ({'val_size': 'lots'}, 'dataset_args.val_size'),
    ({'limit_train': 0}, 'dataset_args.limit_train'),
    ({'colour': True}, 'dataset_args.colour'),
    ({'seed': 'x'}, 'dataset_args.seed'),
])
def test_bad_args_name_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        load_dataset('digits', **kwargs)
    assert e.value.field == field
    assert str(e.value).startswith(field + ':')


def test_bad_synthetic_arg_type():
    with pytest.raises(ConfigError, match=r'^dataset_args\.num_classes: '):
        dataset_info('synthetic', num_classes='four')


def test_missing_torchvision_files_say_download(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_dataset('cifar10', root=str(tmp_path))
    assert 'dataset_args.download: true' in str(e.value)
    assert '\n' not in str(e.value)


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(FashionMNIST, 'system_dir', str(tmp_path / 'none'))
    with pytest.raises(ConfigError) as e:
        load_dataset('fashion_mnist', root=str(tmp_path))
    msg = str(e.value)
    assert msg.startswith('dataset: fashion_mnist files not found')
    assert 'dataset-fashion-mnist' in msg and 'dataset_args.download: true' in msg


@pytest.mark.skipif(not FashionMNIST().available(),
                    reason='Fashion-MNIST files absent (apt-get install dataset-fashion-mnist)')
def test_fashion_mnist_loads():
    s = load_dataset('fashion_mnist', val_size=5000, limit_train=1000)
    assert s.train_x.shape == (1000, 1, 28, 28)
    assert len(s.val_y) == 5000 and len(s.test_y) == 10000
    assert int(s.train_y.max()) == 9


# --------------------------------------------------------------------------- generic classes / image_size


def _standardised(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (x - x.mean()) / x.std()


def test_classes_keep_and_relabel_in_given_order(digits: Splits):
    sub = load_dataset('digits', classes=[3, 1])
    assert sub.info.num_classes == 2 and dataset_info('digits', classes=[3, 1]).num_classes == 2
    for split in ('train', 'val', 'test'):
        assert set(getattr(sub, f'{split}_y').tolist()) == {0, 1}
    # the test split is never shuffled: new label 0 = the original 3s, 1 = the original 1s, in order
    for new, old in ((0, 3), (1, 1)):
        a, b = sub.test_x[sub.test_y == new], digits.test_x[digits.test_y == old]
        assert a.shape == b.shape and len(a) > 30
        assert torch.allclose(_standardised(a), _standardised(b), atol=1e-4)  # same images, other normalisation
    assert abs(float(sub.train_x.mean())) < 1e-4  # normalised with the kept classes' statistics
    kept = sum(int(((y == 3) | (y == 1)).sum()) for y in (digits.train_y, digits.val_y, digits.test_y))
    assert len(sub.train_y) + len(sub.val_y) + len(sub.test_y) == kept


def test_image_size_resizes_and_changes_info():
    info = dataset_info('digits', image_size=16)
    assert (info.image_size, info.num_classes, info.pad) == (16, 10, 2)
    big = load_dataset('digits', image_size=16)
    assert big.train_x.shape[1:] == (1, 16, 16) and big.info == info
    assert abs(float(big.train_x.mean())) < 1e-4 and abs(float(big.train_x.std()) - 1) < 1e-3
    # shrinking back reproduces the 8x8 images closely (bilinear, antialiased)
    small = torch.nn.functional.interpolate(big.test_x, size=(8, 8), mode='bilinear', antialias=True)
    orig = load_dataset('digits').test_x
    corr = torch.corrcoef(torch.stack([small.flatten(), orig.flatten()]))[0, 1]
    assert corr > 0.95


def test_generic_args_split_the_cache_key(tmp_path, monkeypatch):
    from nni_xfer.data.pipeline import cache_path

    monkeypatch.setenv('NNI_XFER_HOME', str(tmp_path))
    keys = {cache_path('digits', a) for a in ({}, {'classes': [0, 1]}, {'classes': [1, 0]}, {'image_size': 6},
                                               {'classes': [0, 1], 'image_size': 6})}
    assert len(keys) == 5
    a = load_dataset('digits', classes=(4, 2), image_size=6)
    b = load_dataset('digits', classes=[4, 2], image_size=6)  # tuple and list: one cache file
    assert len(list((tmp_path / 'datasets').glob('digits-*.pt'))) == 1
    assert torch.equal(a.train_x, b.train_x) and a.train_x.shape[1:] == (1, 6, 6)


def test_synthetic_keeps_its_own_image_size_and_takes_classes():
    info = dataset_info('synthetic', num_classes=5, image_size=6, classes=[4, 0, 2])
    assert (info.image_size, info.num_classes) == (6, 3)
    s = load_dataset('synthetic', num_samples=120, num_classes=5, image_size=6, classes=[4, 0, 2])
    assert s.train_x.shape[1:] == (1, 6, 6) and set(s.train_y.tolist()) == {0, 1, 2}


@pytest.mark.parametrize('kwargs, field, text', [
    ({'classes': [1, 1]}, 'dataset_args.classes', 'listed twice'),
    ({'classes': [0, 10]}, 'dataset_args.classes', 'out of range'),
    ({'classes': [0]}, 'dataset_args.classes', 'at least 2'),
    ({'classes': '0-4'}, 'dataset_args.classes', 'list of class indices'),
    ({'classes': [0, True]}, 'dataset_args.classes', 'list of class indices'),
    ({'image_size': 1}, 'dataset_args.image_size', '>= 2'),
    ({'image_size': 14.0}, 'dataset_args.image_size', 'integer'),
])
def test_bad_generic_args_name_the_key(kwargs, field, text, monkeypatch):
    monkeypatch.setattr(D_Digits, 'load', lambda *a, **k: pytest.fail('loaded data before the check'))
    for fn in (dataset_info, load_dataset):
        with pytest.raises(ConfigError) as e:
            fn('digits', **kwargs)
        assert e.value.field == field and text in str(e.value) and '\n' not in str(e.value)


def test_bad_generic_args_fail_check_before_any_trial():
    from nni_xfer.config import validate_class_args

    base = {'strategy': 'random', 'space': 'simple_cnn', 'dataset': 'digits'}
    errors, built = validate_class_args({**base, 'dataset_args': {'classes': [2, 12]}})
    assert built is None and [e.field for e in errors] == ['classArgs.dataset_args.classes']
    errors, built = validate_class_args({**base, 'dataset_args': {'image_size': 'big'}})
    assert [e.field for e in errors] == ['classArgs.dataset_args.image_size']
    errors, built = validate_class_args({**base, 'dataset_args': {'classes': [7, 3, 5], 'image_size': 12}})
    assert errors == [] and (built.dataset_info.num_classes, built.dataset_info.image_size) == (3, 12)


@pytest.mark.skipif(not FashionMNIST().available(),
                    reason='Fashion-MNIST files absent (apt-get install dataset-fashion-mnist)')
def test_fashion_mnist_family_task():
    s = load_dataset('fashion_mnist', classes=[5, 6, 7, 8, 9], image_size=14, val_size=1000, limit_train=500)
    assert s.train_x.shape == (500, 1, 14, 14) and s.info.num_classes == 5 and s.info.pad == 1
    assert len(s.test_y) == 5000 and s.test_y.bincount().tolist() == [1000] * 5
    assert len(s.val_y) == 1000 and set(s.train_y.tolist()) == set(range(5))
