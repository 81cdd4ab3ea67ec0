"""Plain-PyTorch trainer: augmentation, config parsing, learning, determinism."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn

from nni_xfer.data.pipeline import Splits, load_dataset
from nni_xfer.errors import ConfigError
from nni_xfer.training.trainer import EpochResult, TrainConfig, Trainer, augment_batch

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope='module')
def digits() -> Splits:
    return load_dataset('digits')


def tiny_cnn(in_channels: int = 1, num_classes: int = 10, size: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * ((size + 1) // 2) ** 2, num_classes),
    )


# --------------------------------------------------------------------------- augmentation


def test_augment_shape_and_determinism():
    x = torch.randn(32, 3, 10, 10)
    a = augment_batch(x, 2, True, torch.Generator().manual_seed(7))
    b = augment_batch(x, 2, True, torch.Generator().manual_seed(7))
    c = augment_batch(x, 2, True, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augment_is_crop_of_padded_or_flip():
    x = torch.arange(64 * 25, dtype=torch.float32).view(64, 1, 5, 5)
    out = augment_batch(x, 1, True, torch.Generator().manual_seed(0))
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    kinds = set()
    for i in range(len(x)):
        found = None
        for dy in range(3):
            for dx in range(3):
                crop = padded[i, :, dy:dy + 5, dx:dx + 5]
                if torch.equal(out[i], crop):
                    found = ('crop', dy, dx)
                elif torch.equal(out[i], crop.flip(-1)):
                    found = ('flip', dy, dx)
        assert found is not None, f'sample {i} is no crop of its padded image'
        kinds.add(found)
    # per-sample draws: many distinct offsets and both orientations appear
    assert len(kinds) > 5
    assert {k[0] for k in kinds} == {'crop', 'flip'}


def test_augment_noop():
    x = torch.randn(4, 1, 6, 6)
    assert augment_batch(x, 0, False) is x
    flipped_only = augment_batch(x, 0, True, torch.Generator().manual_seed(0))
    for i in range(4):
        assert torch.equal(flipped_only[i], x[i]) or torch.equal(flipped_only[i], x[i].flip(-1))


# --------------------------------------------------------------------------- config


def test_from_dict_defaults_and_values():
    cfg = TrainConfig.from_dict({'epochs': 2, 'lr': '5e-2', 'weight_decay': 0, 'amp': None})
    assert cfg.epochs == 2 and cfg.lr == 0.05 and cfg.weight_decay == 0.0 and cfg.amp is None
    assert TrainConfig.from_dict(None) == TrainConfig()


def test_from_dict_unknown_key_names_field():
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({'epochz': 3})
    assert e.value.field == 'evaluator_args.epochz'
    assert 'epochs' in e.value.allowed
    assert str(e.value).startswith('evaluator_args.epochz: ')
    with pytest.raises(ConfigError, match=r'^trial\.train\.foo: '):
        TrainConfig.from_dict({'foo': 1}, field='trial.train')


@pytest.mark.parametrize('d, field', [
    ({'epochs': 1.5}, 'evaluator_args.epochs'),
    ({'epochs': True}, 'evaluator_args.epochs'),
    ({'batch_size': 0}, 'evaluator_args.batch_size'),
    ({'augment': 'yes'}, 'evaluator_args.augment'),
    ({'lr': 'fast'}, 'evaluator_args.lr'),
    ({'momentum': 1.5}, 'evaluator_args.momentum'),
    ({'device': 'tpu:x'}, 'evaluator_args.device'),
    ({'channels_last': 'yes'}, 'evaluator_args.channels_last'),
    ({'compile': 'fast'}, 'evaluator_args.compile'),
    ({'compile': 1}, 'evaluator_args.compile'),
])
def test_from_dict_bad_values(d, field):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict(d)
    assert e.value.field == field


def test_cuda_unavailable_is_config_error():
    if torch.cuda.is_available():
        pytest.skip('CUDA present')
    with pytest.raises(ConfigError, match='device'):
        Trainer(TrainConfig(device='cuda'))


# --------------------------------------------------------------------------- evaluation


class _PickChannelMean(nn.Module):
    """Predicts class 1 when the image mean is positive, else class 0."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-m, m], dim=1)


def test_evaluate_hand_made_model():
    x = torch.cat([torch.ones(6, 1, 2, 2), -torch.ones(4, 1, 2, 2)])
    y = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0, 1])  # 5 + 3 correct out of 10
    trainer = Trainer(TrainConfig(device='cpu', eval_batch_size=3))
    model = _PickChannelMean()
    model.train()
    assert trainer.evaluate(model, x, y) == pytest.approx(0.8)
    assert model.training  # mode restored
    assert trainer.evaluate(model, x[:0], y[:0]) == 0.0


# --------------------------------------------------------------------------- training


def test_learns_digits(digits: Splits, tmp_path):
    epochs_seen: list[EpochResult] = []
    trainer = Trainer(TrainConfig(epochs=3, device='cpu'), log_dir=str(tmp_path / 'tb'))
    assert trainer.device == torch.device('cpu')
    result = trainer.fit(tiny_cnn(), digits, on_epoch=epochs_seen.append)
    assert result.val_acc > 0.8
    assert [h.epoch for h in result.history] == [1, 2, 3] == [h.epoch for h in epochs_seen]
    assert result.history[0].lr == pytest.approx(0.05)
    assert result.history[-1].lr < result.history[0].lr  # cosine decay
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.images_per_second > 0 and result.train_seconds > 0
    assert result.val_acc == result.history[-1].val_acc
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'tb'))


def test_same_seed_same_result(digits: Splits):
    cfg = TrainConfig(epochs=1, device='cpu', seed=3, batch_size=50)  # 1293 % 50 leaves a partial batch
    a = Trainer(cfg).fit(tiny_cnn(), digits)
    b = Trainer(cfg).fit(tiny_cnn(), digits)
    assert a.val_acc == b.val_acc
    assert a.history[0].train_loss == b.history[0].train_loss


def test_epochs_zero_and_trainable_subset(digits: Splits):
    model = tiny_cnn()
    before = [p.detach().clone() for p in model.parameters()]
    r = Trainer(TrainConfig(epochs=0, device='cpu')).fit(model, digits)
    assert r.history == [] and 0 <= r.val_acc <= 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # only the head is optimised
    head = model[-1]
    conv_before = model[0].weight.detach().clone()
    head_before = head.weight.detach().clone()
    Trainer(TrainConfig(epochs=1, device='cpu', augment=False)).fit(model, digits, trainable=head.parameters())
    assert torch.equal(model[0].weight, conv_before)
    assert not torch.equal(head.weight, head_before)


def test_synthetic_beats_chance():
    s = load_dataset('synthetic', num_samples=256, num_classes=4)
    r = Trainer(TrainConfig(epochs=4, device='cpu', batch_size=32)).fit(tiny_cnn(num_classes=4), s)
    assert r.val_acc > 0.5


@pytest.mark.timeout(120)
@pytest.mark.parametrize('exported,expected', [(None, 'PASSIVE'), ('ACTIVE', 'ACTIVE')])
def test_trial_process_uses_passive_openmp_waiting(exported, expected):
    """Concurrent CPU trials: the trial entry point sets OMP_WAIT_POLICY before torch loads."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    if exported:
        env['OMP_WAIT_POLICY'] = exported
    # record the policy at the moment torch is first imported (it is read when OpenMP loads)
    code = (
        "import os, sys\n"
        "class Hook:\n"
        "    seen = None\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' and Hook.seen is None:\n"
        "            Hook.seen = os.environ.get('OMP_WAIT_POLICY', 'unset')\n"
        "sys.meta_path.insert(0, Hook())\n"
        "import nni_xfer.runtime.trial\n"
        "print(Hook.seen)\n")
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


# --------------------------------------------------------------------------- speed options (issue 23)


def test_speed_options_parse_and_one_line_errors():
    cfg = TrainConfig.from_dict({'channels_last': True, 'compile': 'reduce-overhead'})
    assert cfg.channels_last is True and cfg.compile == 'reduce-overhead'
    assert TrainConfig().channels_last is False and TrainConfig().compile is False  # off by default
    assert TrainConfig.from_dict({'compile': True}).compile is True
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({'compile': 'max_autotune'})
    assert str(e.value) == ("evaluator_args.compile: unknown torch.compile mode 'max_autotune' "
                            "(allowed: false, true, default, reduce-overhead, max-autotune)")


@pytest.fixture(scope='module')
def small_digits() -> Splits:
    return load_dataset('digits', limit_train=128)


def _losses(small: Splits, **options) -> tuple[list[float], float, nn.Module]:
    model = tiny_cnn()
    r = Trainer(TrainConfig(epochs=2, batch_size=32, device='cpu', seed=1, **options)).fit(model, small)
    return [h.train_loss for h in r.history], r.val_acc, model


def test_channels_last_trains_to_the_same_loss(small_digits: Splits):
    """NHWC batches and weights: the same losses up to float reassociation; the model comes back in
    the default memory format (checkpoints, weight transfer)."""
    base, base_acc, _ = _losses(small_digits)
    nhwc, nhwc_acc, model = _losses(small_digits, channels_last=True)
    assert nhwc == pytest.approx(base, rel=1e-4)
    assert abs(nhwc_acc - base_acc) <= 0.01
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compile_trains_to_the_same_loss(small_digits: Splits):
    """torch.compile of the forward (inductor, C++ on a CPU: tens of seconds to compile, hence slow)."""
    base, base_acc, _ = _losses(small_digits)
    compiled, acc, _ = _losses(small_digits, compile=True)
    assert compiled == pytest.approx(base, rel=1e-4)
    assert abs(acc - base_acc) <= 0.01
