"""EAS transform sequences on token networks and the ``net2net`` initializer in real trials."""
import random
from types import SimpleNamespace

import pytest
import torch

from nni_xfer.search_spaces.eas_plain_cnn import transform_network, transform_tokens
from nni_xfer.errors import ConfigError
from nni_xfer.space import build_space, freeze
from nni_xfer.runtime.trial import Reporter, run_trial
from nni_xfer.transfer.net2net import calibrate_inserted

pytestmark = pytest.mark.timeout(120)
DIGITS = SimpleNamespace(in_channels=1, num_classes=10, image_size=8)
START = ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'fc-64']


class Quiet(Reporter):
    def intermediate(self, m):
        pass

    def final(self, m):
        pass


def random_ops(tokens, rng, n):
    ops = []
    for _ in range(n):
        if rng.random() < 0.5:
            idx = [i for i, t in enumerate(tokens) if t != 'pool']
            i = rng.choice(idx)
            w = int(tokens[i].split('-')[1])
            op = {'op': 'wider', 'layer': i, 'width': w + rng.choice([8, 16, 32])}
        else:
            op = {'op': 'deeper', 'after': rng.randrange(len(tokens)), 'kernel': rng.choice([1, 3, 5])}
        ops.append(op)
        tokens = transform_tokens(tokens, [op], 1)
    return ops, tokens


@pytest.mark.parametrize('seed', range(4))
def test_random_sequences_preserve_function_exactly(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    sp = build_space('eas_plain_cnn', {'conv_widths': list(range(8, 400, 8)), 'fc_units': list(range(8, 400, 8))},
                     DIGITS)
    parent = freeze(sp, {'layers': START}).eval()
    for m in parent.modules():  # non-trivial BN statistics
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ops, tokens = random_ops(START, rng, 10)
    x = torch.randn(16, 1, 8, 8)
    child = transform_network(parent, ops, noise=False).eval()
    calibrate_inserted(child, x)
    assert child.tokens == tokens
    ref = parent(x)
    out = child(x)
    assert (out - ref).abs().max() / ref.abs().max() <= 1e-5
    # the child's weights load into the network built from its tokens
    fresh = freeze(sp, {'layers': tokens})
    fresh.load_state_dict(child.state_dict())


def test_bad_ops_name_the_field():
    with pytest.raises(ConfigError, match=r'^init\.ops\[0\]\.layer'):
        transform_tokens(START, [{'op': 'wider', 'layer': 1, 'width': 64}])
    with pytest.raises(ConfigError, match=r'^init\.ops\[0\]\.width'):
        transform_tokens(START, [{'op': 'wider', 'layer': 0, 'width': 8}])
    with pytest.raises(ConfigError, match=r'^init\.ops\[0\]'):
        transform_tokens(START, [{'op': 'shuffle'}])
    assert transform_tokens(START, [{'op': 'deeper', 'after': 5}])[6] == 'fc-64'
    assert transform_tokens(START, [{'op': 'deeper', 'after': 1, 'kernel': 5}])[2] == 'conv-16-5'


@pytest.mark.slow
def test_child_inherits_parent_accuracy_on_digits(tmp_path):
    base = dict(space='eas_plain_cnn', dataset='digits', evaluator='train', experiment_id='eas-test',
                space_args={'start': START}, dataset_args={'val_size': 0.2}, checkpoint_root=str(tmp_path))
    parent = run_trial(dict(base, architecture={'layers': START}, proposal_id=0,
                            evaluator_args={'epochs': 6, 'lr': 0.05}), reporter=Quiet())
    assert parent['val_acc'] > 0.8
    ops = [{'op': 'wider', 'layer': 0, 'width': 32}, {'op': 'deeper', 'after': 2, 'kernel': 3},
           {'op': 'wider', 'layer': 7, 'width': 128}, {'op': 'deeper', 'after': 7}]
    layers = transform_tokens(START, ops, 1)
    child = run_trial(dict(base, architecture={'layers': layers}, proposal_id=1, parent=0, seed=1,
                           init={'kind': 'net2net', 'uri': parent['checkpoint'], 'sha256': parent['sha256'],
                                 'ops': ops},
                           evaluator_args={'epochs': 0}), reporter=Quiet())
    assert abs(child['inherited_acc'] - parent['val_acc']) <= 0.01
    assert child['params'] > parent['params']
    with pytest.raises(ConfigError, match='init.ops'):
        run_trial(dict(base, architecture={'layers': START}, proposal_id=2,
                       init={'kind': 'net2net', 'uri': parent['checkpoint'], 'ops': ops},
                       evaluator_args={'epochs': 0}), reporter=Quiet())
