"""Trainer options the NASNet-cell children need: cutout, drop-path ramp, auxiliary loss, lr schedule, clipping."""
import pytest
import torch
import torch.nn as nn

from nni_xfer.data.pipeline import load_dataset
from nni_xfer.errors import ConfigError
from nni_xfer.search_spaces.nasnet_cells import NasnetCells, example
from nni_xfer.space import freeze
from nni_xfer.training.trainer import TrainConfig, Trainer, cutout_batch

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('one_torch_thread')]


@pytest.fixture(scope='module')
def digits():
    return load_dataset('digits', limit_train=256)


def test_defaults_keep_todays_behaviour():
    c = TrainConfig()
    assert (c.cutout, c.drop_path, c.lr_schedule, c.grad_clip) == (0, None, 'cosine', None)


@pytest.mark.parametrize('key, value', [('cutout', -1), ('drop_path', 1.0), ('aux_weight', -0.1),
                                        ('lr_schedule', 'step'), ('grad_clip', 0), ('cutout', 1.5)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({key: value})
    assert e.value.field == f'evaluator_args.{key}' and '\n' not in str(e.value)


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(64, 3, 32, 32)
    y = cutout_batch(x, 16, torch.Generator().manual_seed(0))
    zeros = (y == 0).all(1).flatten(1).sum(1)
    assert zeros.max() == 256 and zeros.min() >= 64  # 16x16 inside, clipped at the border (>= 8x8)
    assert not torch.equal(y[0], y[1])


def test_constant_schedule_and_clipping(digits):
    lrs = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.1, device='cpu', lr_schedule='constant', grad_clip=1e-6,
                      momentum=0.0, weight_decay=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    Trainer(cfg).fit(model, digits, on_epoch=lambda e: lrs.append(e.lr))
    assert lrs == [0.1, 0.1]
    # a tiny clip norm bounds every step: plain SGD moves at most lr * clip per step
    moved = sum((a - b).norm() ** 2 for a, b in zip(model.parameters(), before)) ** 0.5
    assert moved <= 0.1 * 1e-6 * 8 * 1.01


def test_nasnet_cells_drop_path_ramp_and_aux_head_train_on_digits(digits):
    space = NasnetCells(in_channels=1, num_classes=10, image_size=8, N=1, F=8, drop_path=0.3, aux_head=True)
    model = freeze(space, example())
    seen = []
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, device='cpu', drop_path=0.3, cutout=4, grad_clip=5.0)
    result = Trainer(cfg).fit(model, digits, on_epoch=lambda e: seen.append(
        max(m.drop_prob for m in model.modules() if hasattr(m, 'drop_prob'))))
    assert 0 < seen[0] < seen[1] <= 0.3 + 1e-9
    assert result.history[-1].train_loss < result.history[0].train_loss * 1.5
    model.train()
    logits, aux = model(digits.train_x[:4])
    assert logits.shape == aux.shape == (4, 10)


def test_drop_path_needs_drop_path_layers(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match='drop_path'):
        Trainer(TrainConfig(epochs=1, device='cpu', drop_path=0.2)).fit(model, digits)
