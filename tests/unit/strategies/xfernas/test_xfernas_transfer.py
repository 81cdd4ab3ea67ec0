"""XferNAS transfer network (universal + per-task residual) and source knowledge from the store."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from nni_xfer.errors import ConfigError
from nni_xfer.store import KnowledgeStore
from nni_xfer.strategies.xfernas.sources import (OTHER_TASKS, import_results, load_source_knowledge, read_results,
                                                 task_key)
from nni_xfer.strategies.xfernas.transfer import TransferPredictor, fit_predictor, scale_targets, transfer_loss

pytestmark = pytest.mark.timeout(60)


def _tasks(n_per_task=150, d=8, seed=0):
    """Three tasks sharing a universal response g(z) plus their own residual r_i(z)."""
    gen = torch.Generator().manual_seed(seed)
    w_u = torch.randn(d, generator=gen)
    w_r = [torch.randn(d, generator=gen) for _ in range(3)]

    def resp(z, i):  # a strong shared part, a smaller task-specific nonlinear part
        return torch.sigmoid(z @ w_u / 2) + 0.25 * torch.tanh(z @ w_r[i])
    zs = [torch.randn(n_per_task, d, generator=gen) for _ in range(3)]
    ys = [resp(z, i) for i, z in enumerate(zs)]
    return zs, ys, resp


def test_residuals_start_at_zero_and_are_per_task(one_torch_thread):
    torch.manual_seed(0)
    net = TransferPredictor(code_dim=6, num_tasks=3, hidden=16, layers=2, dropout=0.0)
    z = torch.randn(5, 6)
    u = net.universal_output(z)
    for t in range(3):
        assert torch.allclose(net(z, t), u)
    # training on task 0 only moves task 0's residual; the others stay exactly zero
    fit_predictor(net, z, torch.zeros(5, dtype=torch.long), torch.rand(5), epochs=20)
    assert net.residual_output(z, 0).abs().sum() > 0
    assert torch.equal(net.residual_output(z, 1), torch.zeros(5))
    assert torch.equal(net.residual_output(z, 2), torch.zeros(5))
    # one universal network: the same module serves every task
    with torch.no_grad():
        task = torch.tensor([0, 1, 2, 0, 1])
        u = net.universal_output(z)
        assert torch.allclose(net(z, task), u + net.residual_output(z, task))
        assert torch.allclose(net(z, 1), u) and torch.allclose(net(z, None), u)


def test_loss_weights():
    pred, target = torch.tensor([0.2, 0.8]), torch.tensor([0.0, 1.0])
    loss, l_pred = transfer_loss(pred, target, torch.tensor(3.0))
    assert float(l_pred) == pytest.approx(0.04)
    assert float(loss) == pytest.approx(0.8 * 0.04 + 0.2 * 3.0)
    loss, _ = transfer_loss(pred, target, torch.tensor(3.0), alpha=0.5)
    assert float(loss) == pytest.approx(0.5 * 0.04 + 0.5 * 3.0)


def test_gradient_reaches_universal_from_every_task_and_residual_from_its_own():
    torch.manual_seed(0)
    net = TransferPredictor(code_dim=4, num_tasks=2, hidden=8, layers=1, dropout=0.0)
    z = torch.randn(3, 4)
    loss, _ = transfer_loss(net(z, 1), torch.ones(3), 0.0)
    loss.backward()
    assert net.universal[0].weight.grad.abs().sum() > 0
    assert net.residuals[1][-1].weight.grad.abs().sum() > 0
    assert net.residuals[0][-1].weight.grad is None or net.residuals[0][-1].weight.grad.abs().sum() == 0


def test_universal_part_transfers_to_an_unseen_task_and_its_residual_fits(one_torch_thread):
    torch.manual_seed(0)
    zs, ys, _ = _tasks()
    net = TransferPredictor(code_dim=8, num_tasks=3, hidden=32, layers=2, dropout=0.0)
    z_src = torch.cat(zs[:2])
    t_src = torch.cat([torch.full((len(zs[0]),), 0), torch.full((len(zs[1]),), 1)])
    fit_predictor(net, z_src, t_src, torch.cat(ys[:2]), epochs=150, lr=3e-3, batch_size=100)
    z3, y3 = zs[2], ys[2]
    with torch.no_grad():
        rho_u = spearmanr(net(z3, 2).numpy(), y3.numpy()).statistic   # r^(3) still zero: f^(u) alone
        err_before = float(torch.mean((net(z3, 2) - y3) ** 2))
    assert rho_u > 0.5, rho_u  # far better than chance (0) on a task it never saw
    # the third task's observations (first 100) fit its residual; held-out 50 improve
    t3 = torch.full((100,), 2)
    fit_predictor(net, torch.cat([z_src, z3[:100]]), torch.cat([t_src, t3]), torch.cat([*ys[:2], y3[:100]]),
                  epochs=150, lr=3e-3, seed=1, batch_size=100)
    with torch.no_grad():
        assert net.residual_output(z3, 2).abs().mean() > 1e-3
        err_after = float(torch.mean((net(z3[100:], 2) - y3[100:]) ** 2))
        rho_after = spearmanr(net(z3[100:], 2).numpy(), y3[100:].numpy()).statistic
    assert err_after < 0.5 * err_before, (err_before, err_after)
    assert rho_after > rho_u


def _few_target_results(residual_l2: float, scaling: str, n_target: int) -> float:
    """Target Spearman on 100 held-out codes of a linear transfer network (XferNAS's default depth)
    fitted to two source tasks (100 results each) and ``n_target`` target results (issue 20)."""
    g = np.random.Generator(np.random.PCG64(1))
    d = 32
    z = g.normal(size=(400, d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)   # NAO's codes are unit vectors
    shared = g.normal(size=d)
    ys = [z @ shared + 0.3 * z @ g.normal(size=d) for _ in range(3)]   # sources 0, 1; target 2
    idx = np.concatenate([np.arange(0, 100), np.arange(100, 200), np.arange(200, 200 + n_target)])
    tasks = np.repeat([0, 1, 2], [100, 100, n_target])
    y = np.concatenate([ys[0][:100], ys[1][100:200], ys[2][200:200 + n_target]])
    torch.manual_seed(0)
    net = TransferPredictor(d, 3, hidden=16, layers=0, dropout=0.0, residual_l2=residual_l2)
    fit_predictor(net, torch.tensor(z[idx], dtype=torch.float32), torch.tensor(tasks),
                  torch.tensor(scale_targets(y, tasks, scaling), dtype=torch.float32), epochs=100, seed=0)
    with torch.no_grad():
        pred = net(torch.tensor(z[300:], dtype=torch.float32), 2).numpy()
    return float(spearmanr(pred, ys[2][300:]).statistic)


def test_a_few_target_results_do_not_hurt_the_ranking(one_torch_thread):
    from nni_xfer.strategies.xfernas.strategy import RESIDUAL_L2, TARGET_SCALING

    # the defect: an unregularised residual interpolates 10 min-max-scaled target results
    without = [_few_target_results(0.0, 'minmax', n) for n in (0, 10)]
    assert without[1] < without[0] - 0.15, without
    # XferNAS's defaults (ridge on the residuals, per-task standard scores): no worse than no target data
    fixed = [_few_target_results(RESIDUAL_L2, TARGET_SCALING, n) for n in (0, 10)]
    assert fixed[1] >= fixed[0] - 0.01 and fixed[0] > 0.6, fixed


def test_scale_targets():
    y, t = [0.5, 0.7, 0.9, 10.0, 10.0, 0.1, 0.2], [0, 0, 0, 1, 1, 2, 2]
    assert scale_targets(y, t, 'minmax').tolist() == pytest.approx([0, 0.5, 1, 0.5, 0.5, 0, 1])
    std = scale_targets(y, t, 'standard')
    assert std[:3].tolist() == pytest.approx([0.5 - 1.2247 / 6, 0.5, 0.5 + 1.2247 / 6], abs=1e-4)
    assert std[3:5].tolist() == [0.5, 0.5] and std[5:].tolist() == pytest.approx([0.5 - 1 / 6, 0.5 + 1 / 6])
    with pytest.raises(ValueError):
        scale_targets(y, t, 'rank')


# --------------------------------------------------------------------------- tasks and the store


def test_task_key():
    assert task_key('digits', {'val_size': 0.2, 'seed': 3}) == 'digits'     # split args are not a task
    assert task_key('synthetic', {'seed': 0}) == 'synthetic'               # defaults dropped
    assert task_key('synthetic', {'num_classes': 6, 'seed': 1, 'val_size': 0.3}) == \
        'synthetic(num_classes=6,seed=1)'
    assert task_key('quickdraw', {'classes': 100}) == 'quickdraw(classes=100)'  # unregistered: kept as given
    # the generic classes / image_size arguments make another task of the family
    a = task_key('fashion_mnist', {'classes': [0, 1, 2, 3, 4], 'image_size': 14, 'val_size': 0.2})
    b = task_key('fashion_mnist', {'classes': (5, 6, 7, 8, 9), 'image_size': 14})
    assert a == 'fashion_mnist(classes=[0,1,2,3,4],image_size=14)'
    assert b == 'fashion_mnist(classes=[5,6,7,8,9],image_size=14)'
    assert task_key('fashion_mnist', {'image_size': 14}) != task_key('fashion_mnist', {}) == 'fashion_mnist'
    assert task_key('synthetic', {'image_size': 8}) == 'synthetic'  # synthetic's own image_size, at its default


def _record(store, exp, dataset, archs_scores, space='toy', dataset_args=None, mode='maximize'):
    store.record_experiment(exp, strategy='random', space=space, dataset=dataset)
    for i, (a, s) in enumerate(archs_scores):
        store.record_proposal(exp, i, architecture=a, space=space, dataset=dataset,
                              spec={'dataset_args': dataset_args or {}, 'mode': mode})
        store.record_result(exp, i, {'default': s, 'val_acc': s}, status='SUCCEEDED')


def test_source_knowledge_from_a_store(tmp_path):
    store = KnowledgeStore(tmp_path / 'store.db')
    _record(store, 'e_digits', 'digits', [({'a': i}, 0.5 + i / 100) for i in range(10)])
    _record(store, 'e_syn', 'synthetic', [({'a': i}, 0.3 + i / 100) for i in range(6)],
            dataset_args={'num_classes': 6})
    _record(store, 'e_syn_loss', 'synthetic', [({'a': 1}, 2.0), ({'a': 2}, 1.0)],
            dataset_args={'num_classes': 3}, mode='minimize')
    _record(store, 'e_target_old', 'synthetic', [({'a': 3}, 0.9)])            # the target task itself
    _record(store, 'e_other_space', 'digits', [({'b': 1}, 0.9)], space='other')
    store.record_proposal('e_digits', 99, architecture={'a': 99}, space='toy', dataset='digits')  # never finished

    tasks, prior, counts = load_source_knowledge(store, 'toy', 'synthetic')
    keys = [t.key for t in tasks]
    assert keys == ['digits', 'synthetic(num_classes=3)', 'synthetic(num_classes=6)']
    assert len(prior) == 0 and counts['evaluations'] == 18
    assert tasks[1].scores == [-2.0, -1.0]                 # minimised sources: larger is better
    tasks, _, _ = load_source_knowledge(store, 'toy', 'synthetic', per_source_limit=4, seed=1)
    assert [len(t) for t in tasks] == [4, 2, 4]
    again, _, _ = load_source_knowledge(store, 'toy', 'synthetic', per_source_limit=4, seed=1)
    assert [t.architectures for t in again] == [t.architectures for t in tasks]   # seeded subset
    # explicit experiments; one of the target task joins the target knowledge
    tasks, prior, _ = load_source_knowledge(store, 'toy', 'synthetic', sources=['e_digits', 'e_target_old'])
    assert [t.key for t in tasks] == ['digits'] and prior.architectures == [{'a': 3}]
    # architectures the target space cannot encode are dropped and counted
    tasks, _, counts = load_source_knowledge(store, 'toy', 'synthetic', valid=lambda a: a['a'] < 5)
    assert counts['invalid'] == 5 + 1
    with pytest.raises(ConfigError, match=r"^strategy_args\.sources: unknown experiment 'nope'"):
        load_source_knowledge(store, 'toy', 'synthetic', sources=['nope'])
    with pytest.raises(ConfigError, match=r"^strategy_args\.sources: experiment 'e_other_space' searched space"):
        load_source_knowledge(store, 'toy', 'synthetic', sources=['e_other_space'])
    with pytest.raises(ConfigError, match=r'^strategy_args\.sources'):
        load_source_knowledge(store, 'toy', 'synthetic', sources='all')
    assert load_source_knowledge(KnowledgeStore(':memory:'), 'toy', 'digits', sources=OTHER_TASKS)[0] == []


def test_import_csv_and_json(tmp_path):
    from nni_xfer.strategies.xfernas.sources import space_parser
    rows = [{'architecture': {'width': 16, 'depth': 1}, 'dataset': 'digits', 'accuracy': 0.8},
            {'architecture': {'width': 32, 'depth': 2}, 'dataset': 'digits', 'accuracy': 0.85},
            {'architecture': {'width': 16, 'depth': 2}, 'dataset': 'quickdraw', 'accuracy': 0.6,
             'dataset_args': {'classes': 100}}]
    pj = tmp_path / 'paper.json'
    pj.write_text(json.dumps(rows))
    pc = tmp_path / 'paper.csv'
    pc.write_text('architecture,dataset,accuracy\n' + '\n'.join(
        '"' + json.dumps(r['architecture']).replace('"', '""') + f'",{r["dataset"]},{r["accuracy"]}' for r in rows[:2]))
    assert [r.accuracy for r in read_results(pj)] == [0.8, 0.85, 0.6]
    assert [r.architecture for r in read_results(pc)] == [rows[0]['architecture'], rows[1]['architecture']]
    from nni_xfer.data.pipeline import dataset_info
    from nni_xfer.space import build_space, space_info
    dims = space_info('simple_cnn', {}, build_space('simple_cnn', {}, dataset_info('digits'))).dims
    arch = {k: v[0] for k, v in dims.items()}
    rows = [{'architecture': arch, 'dataset': 'digits', 'accuracy': 0.7}]
    pj.write_text(json.dumps(rows))
    store = KnowledgeStore(tmp_path / 's.db')
    done = import_results(store, read_results(pj), 'simple_cnn', name='paper', parse=space_parser('simple_cnn', {}))
    assert done == {'import:paper:digits': 1}
    tasks, _, _ = load_source_knowledge(store, 'simple_cnn', 'cifar10')
    assert tasks[0].key == 'digits' and tasks[0].scores == [0.7]
    bad = dict(arch)
    bad[next(iter(dims))] = 'nonsense'
    pj.write_text(json.dumps([{'architecture': bad, 'dataset': 'digits', 'accuracy': 0.7}]))
    with pytest.raises(ConfigError, match=r'^row 1\.architecture\.'):
        import_results(store, read_results(pj), 'simple_cnn', name='bad', parse=space_parser('simple_cnn', {}))
    pj.write_text(json.dumps([{'architecture': arch, 'dataset': 'digits'}]))
    with pytest.raises(ConfigError, match=r'^paper\.json row 1: no accuracy'):
        read_results(pj)


def test_import_nasnet_cells_formats(tmp_path):
    from nni_xfer.strategies.xfernas.sources import space_parser
    from nni_xfer.search_spaces.nasnet_cells import XFERNASNET_DAGS, CellGrammar, example
    parse = space_parser('nasnet_cells', {})
    assert parse(XFERNASNET_DAGS) == example()
    assert parse(CellGrammar(5, 'xfernas').to_tokens(example())) == example()
    assert parse(example()) == example()
    with pytest.raises(ConfigError, match=r'^architecture'):
        parse({'conv_dag': {}, 'reduc_dag': {}})


@pytest.mark.parametrize('name', ['sources_quick.yaml', 'sources_paper.yaml'])
def test_example_sources_configs_write_checked_exp_ymls(tmp_path, name):
    from pathlib import Path

    import yaml

    from nni_xfer.config import check_config
    from nni_xfer.strategies.xfernas.build_sources import SourcesConfig, write_source_configs
    cfg = SourcesConfig.load(Path(__file__).resolve().parents[4] / 'examples' / 'xfernas' / name)
    paths = write_source_configs(cfg, tmp_path)
    assert len(paths) == len(cfg.tasks) >= 2
    for p in paths:
        assert check_config(p) == []
        args = yaml.safe_load(p.read_text())['tuner']['classArgs']
        assert args['strategy'] == 'random' and args['strategy_args'] == {'max_trials': cfg.per_source}
    with pytest.raises(ConfigError, match=r'^sources\.per_source'):
        SourcesConfig.from_dict({'space': 'nasnet_cells', 'tasks': ['digits'], 'per_source': 0})
    with pytest.raises(ConfigError, match=r'^sources\.tasks\[1\]: task .digits. is listed twice'):
        SourcesConfig.from_dict({'space': 'nasnet_cells', 'tasks': ['digits', {'dataset': 'digits',
                                                                             'dataset_args': {'val_size': 0.3}}]})
