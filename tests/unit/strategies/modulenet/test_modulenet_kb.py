"""ModuleNet knowledge base, module-chain space, kb_modules initializer and modulenet evaluator (real digits)."""
import json

import pytest
import torch
import yaml

from nni_xfer.data.pipeline import dataset_info
from nni_xfer.errors import ConfigError
from nni_xfer.strategies.modulenet.kb import KnowledgeBase, build_kb
from nni_xfer.space import build_space, freeze, space_info
from nni_xfer.store import KnowledgeStore
from nni_xfer.runtime.trial import Reporter, run_trial

pytestmark = pytest.mark.timeout(300)

DIGITS = {'val_size': 0.2, 'limit_train': 300}


class Quiet(Reporter):
    def intermediate(self, metrics):
        pass

    def final(self, metrics):
        pass


@pytest.fixture(scope='module')
def kb(tmp_path_factory):
    """Two tiny sources trained for one epoch on digits, cut into 5 modules each."""
    root = tmp_path_factory.mktemp('kb') / 'tiny'
    store = KnowledgeStore(root.parent / 'store.db')
    cfg = {'root': str(root), 'dataset': 'digits', 'dataset_args': DIGITS, 'input_size': 32,
           'train': {'epochs': 1, 'augment': False, 'batch_size': 64},
           'sources': [{'name': 'r18', 'arch': 'resnet18', 'width': 0.125},
                       {'name': 'v11', 'arch': 'vgg11_bn', 'width': 0.125}]}
    lines = []
    built = build_kb(cfg, store=store, progress=lines.append)
    return built, cfg, store, lines


def _space(kb, **args):
    return build_space('module_chain', {'kb': str(kb.root), 'head_units': [32], **args},
                       dataset_info('digits', **DIGITS))


def test_manifest_files_and_store(kb):
    built, _, store, lines = kb
    assert built.source_names() == ['r18', 'v11']
    assert len(built.manifest['modules']) == 10
    for m in built.manifest['modules']:
        assert (built.root / m['file']).is_file()
        assert m['params'] > 0 and m['in_size'] >= m['out_size']
    r18 = [m for m in built.manifest['modules'] if m['source'] == 'r18']
    assert [(m['in_size'], m['out_size']) for m in r18] == [(32, 16), (16, 16), (16, 8), (8, 4), (4, 2)]
    rows = store.modules(str(built.root))
    assert len(rows) == 10 and {r['source'] for r in rows} == {'r18', 'v11'}
    assert all(0 <= s['val_acc'] <= 1 for s in built.sources)
    assert any('training 1 epochs' in line for line in lines)


def test_rebuild_skips_finished_sources(kb):
    _, cfg, store, _ = kb
    lines = []
    build_kb(cfg, store=store, progress=lines.append)
    assert sum('already built' in line for line in lines) == 2


def test_space_dims_and_validation(kb):
    built = kb[0]
    space = _space(built)
    info = space_info('module_chain', {}, space)
    assert info.dims == {f'module_{j}': ['r18', 'v11'] for j in range(5)}
    with pytest.raises(ConfigError, match=r'^space_args.sources:.*allowed: r18, v11'):
        _space(built, sources=['nope'])
    with pytest.raises(ConfigError, match=r'^space_args.connection:'):
        _space(built, connection='mlp')
    with pytest.raises(ConfigError, match=r'^space_args.kb: no knowledge base'):
        build_space('module_chain', {'kb': str(built.root.parent / 'missing')}, dataset_info('digits'))


def test_original_chain_reproduces_the_source_network(kb):
    """A chain of one source's modules with kb weights computes that source's features exactly."""
    built = kb[0]
    model = freeze(_space(built), {f'module_{j}': 'r18' for j in range(5)})
    model.load_kb_weights()
    model.eval()
    src = built.source_network('r18')
    src.load_state_dict(torch.load(built.root / 'sources' / 'r18.pt', weights_only=True)['state_dict'])
    src.eval()
    x = torch.randn(4, 1, 8, 8)
    net = src.net
    with torch.no_grad():
        h = src.adapter(x)
        h = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(h))))))))
        assert torch.allclose(model.trunk(x), h, atol=1e-5)
    assert all(isinstance(p.connection, torch.nn.Identity) for p in model.positions)


def test_mixed_chain_has_parameter_free_connections(kb):
    built = kb[0]
    arch = {'module_0': 'r18', 'module_1': 'v11', 'module_2': 'r18', 'module_3': 'v11', 'module_4': 'v11'}
    model = freeze(_space(built), arch)
    # r18 stem 8ch@16 → v11 stage 2 wants 8ch@16: nothing to adapt; v11 stage 2 (16→8) → r18 layer2 wants
    # 8ch@16: v11's own max pool is dropped (paper: adjust the preceding reduction), then ChP;
    # r18 layer2 16ch@8 → v11 stage 4 wants 32ch@4: ChDP + pool; v11 → v11: nothing
    kinds = [type(p.connection).__name__ for p in model.positions]
    assert kinds == ['Identity', 'Identity', 'Connection', 'Connection', 'Identity'], kinds
    c = model.positions[2].connection
    assert (c.in_channels, c.out_channels, c.in_size, c.out_size) == (16, 8, 16, 16)
    assert [p.dropped for p in model.positions] == [[], ['3'], [], [], []]
    old = freeze(_space(built, resolution='resize'), arch)  # today's comparison mode: pool, then upsample
    c = old.positions[2].connection
    assert (c.in_channels, c.out_channels, c.in_size, c.out_size) == (16, 8, 8, 16)
    assert all(not p.dropped for p in old.positions)
    assert model.trunk_is_fixed()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith('head.') for n in trainable)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    conv = freeze(_space(built, connection='conv1x1'), arch)
    assert not conv.trunk_is_fixed()
    assert any('connection' in n for n, p in conv.named_parameters() if p.requires_grad)


def test_no_default_chain_upsamples(kb, monkeypatch):
    """Every chain of the knowledge base, default resolution mode: no interpolation between modules
    (the input adapter's upsampling of 8x8 digits to the sources' 32x32 is the sources' own input path),
    and every module sees the map side it was trained on."""
    import itertools
    built = kb[0]
    info = {(m['source'], m['position']): m for m in built.manifest['modules']}
    space = _space(built)
    chains = [dict(zip([f'module_{j}' for j in range(5)], codes))
              for codes in itertools.product(['r18', 'v11'], repeat=5)]
    resized = freeze(_space(built, resolution='resize'), {**ARCH, 'module_1': 'v11', 'module_2': 'r18'})
    calls = []
    real = torch.nn.functional.interpolate
    monkeypatch.setattr(torch.nn.functional, 'interpolate', lambda *a, **k: calls.append(1) or real(*a, **k))
    x = resized.adapter(torch.randn(2, 1, 8, 8))
    assert x.shape[-1] == 32

    def run(model, x):
        for p in model.positions:
            x = p(x)
        return x
    with torch.no_grad():
        run(resized, x)
        assert calls, 'resize mode should upsample this chain (control)'
        calls.clear()
        for arch in chains:
            model = freeze(space, arch).eval()
            seen = []
            hooks = [p.module.register_forward_pre_hook(lambda m, inp, j=j: seen.append((j, inp[0].shape[-1])))
                     for j, p in enumerate(model.positions)]
            out = run(model, x)
            for h in hooks:
                h.remove()
            assert not calls, arch
            assert seen == [(j, info[(arch[f'module_{j}'], j)]['in_size']) for j in range(5)], arch
            last = info[(arch['module_4'], 4)]
            assert out.shape[1:] == (last['out_channels'], last['out_size'], last['out_size'])
            for p in model.positions:  # every other module in the chain is a plain module.modules() walk
                assert not any(isinstance(m, torch.nn.Upsample) for m in p.modules())


def test_plan_resolution_hand_cases():
    from nni_xfer.strategies.modulenet.connections import plan_resolution
    # VGG (2 each) then ResNet-small layer2 (in 16): the VGG module at 1 drops its pool
    assert plan_resolution([32, 16, 16, 8, 4], [[2], [2], [2], [2], [2]]) == ([32, 16, 16, 8, 4], [1, 0, 1, 1, 1])
    # larger than needed: keep everything (the connection pools the rest)
    assert plan_resolution([32, 16, 4], [[2], [], [2]]) == ([32, 16, 4], [1, 0, 1])
    # a stem with two reductions (conv stride, max pool) feeding a module that wants 16: drop the pool only
    assert plan_resolution([32, 16], [[2, 2], [2]]) == ([32, 16], [1, 1])
    # the preceding module's own input is too small (ResNet layer1 after a 4x stem, then a 16 module):
    # it runs at 16 with nothing to drop, and the stem before it drops its pool
    assert plan_resolution([32, 8, 16], [[2, 2], [], [2]]) == ([32, 16, 16], [1, 0, 1])


def _spec(kb, arch, **evaluator_args):
    return {'space': 'module_chain', 'space_args': {'kb': str(kb.root), 'head_units': [32]},
            'architecture': arch, 'dataset': 'digits', 'dataset_args': DIGITS, 'evaluator': 'modulenet',
            'evaluator_args': {'epochs': 3, 'alpha': 2.0, 'beta': 3.0, **evaluator_args},
            'init': {'kind': 'kb_modules'}, 'seed': 1}


ARCH = {'module_0': 'v11', 'module_1': 'v11', 'module_2': 'r18', 'module_3': 'r18', 'module_4': 'v11'}


def test_search_trial_metrics_and_frozen_modules(kb):
    built = kb[0]
    m = run_trial(_spec(built, ARCH), reporter=Quiet())
    assert m['cached_features'] is True
    assert m['sim'] == pytest.approx(2 / 5)
    assert 0 <= m['lrate'] <= 1
    assert m['err_val'] == pytest.approx(1 - m['val_acc'])
    assert m['default'] == pytest.approx(m['err_val'] - 2.0 * m['lrate'] + 3.0 * m['sim'])
    assert m['lrate'] == pytest.approx((m['loss_first'] - m['loss_last']) / m['loss_first'], abs=1e-9) or m['lrate'] == 0
    assert m['trainable_params'] < m['params']
    # the checkpoint's module weights are the knowledge base's, bit for bit
    state = torch.load(m['checkpoint'], weights_only=True)['state_dict']
    for j, name in enumerate(ARCH[f'module_{j}'] for j in range(5)):
        kb_state = built.module_state(name, j)
        for k, v in kb_state.items():
            assert torch.equal(state[f'positions.{j}.module.module.{k}'], v), k


def test_frozen_modules_get_no_gradient_without_feature_cache(kb):
    """Training through the whole network (no cache): modules unchanged, no .grad, BN statistics kept."""
    built = kb[0]
    space = _space(built)
    torch.manual_seed(0)
    model = freeze(space, ARCH)
    m = run_trial(_spec(built, ARCH, cache_features=False), model=model, reporter=Quiet(), space=space)
    assert m['cached_features'] is False
    for j, p in enumerate(model.positions):
        for k, v in built.module_state(p.source, j).items():
            assert torch.equal(p.cell().state_dict()[k].cpu(), v), (j, k)
        assert all(q.grad is None for q in p.parameters())
    torch.manual_seed(0)
    cached = run_trial(_spec(built, ARCH), model=freeze(space, ARCH), reporter=Quiet(), space=space)
    assert cached['cached_features'] is True
    # the same head init and batches: training on cached features is the same computation
    assert cached['inherited_acc'] == m['inherited_acc']
    assert cached['val_acc'] == pytest.approx(m['val_acc'], abs=0.01)
    assert cached['loss_last'] == pytest.approx(m['loss_last'], rel=1e-3)


def test_finetune_config_and_report(kb, tmp_path):
    from nni_xfer.strategies.modulenet.finetune import finetune_config
    from nni_xfer.report import make_report
    built = kb[0]
    store = KnowledgeStore(tmp_path / 'store.db')
    chains = [ARCH, {**ARCH, 'module_0': 'r18'}, {f'module_{j}': 'r18' for j in range(5)}]
    for i, (arch, score) in enumerate(zip(chains, [0.5, 0.7, 0.1])):
        store.record_proposal('search', i, architecture=arch, space='module_chain')
        store.record_result('search', i, {'default': score}, status='SUCCEEDED')
    search = tmp_path / 'search.yml'
    search.write_text(yaml.safe_dump({
        'experimentName': 'x', 'searchSpace': {}, 'trialCommand': 'python -m nni_xfer.trial',
        'trialCodeDirectory': '.', 'maxTrialNumber': 9,
        'tuner': {'className': 'nni_xfer.tuner.XferTuner', 'codeDirectory': '.', 'classArgs': {
            'strategy': 'modulenet', 'space': 'module_chain', 'space_args': {'kb': str(built.root)},
            'dataset': 'digits', 'evaluator': 'modulenet', 'mode': 'minimize'}},
        'trainingService': {'platform': 'local'}}))
    cfg = finetune_config(search, 'search', store=str(store.path), top_k=1, epochs=2)
    args = cfg['tuner']['classArgs']
    # top-1 searched (originals excluded from the ranking) + the two originals
    assert args['strategy_args']['architectures'] == [ARCH, {f'module_{j}': 'r18' for j in range(5)},
                                                      {f'module_{j}': 'v11' for j in range(5)}]
    assert args['space_args']['frozen'] is False and args['evaluator_args']['test'] is True
    assert cfg['maxTrialNumber'] == 3
    for i, (arch, acc) in enumerate(zip(args['strategy_args']['architectures'], [0.9, 0.8, 0.85])):
        store.record_proposal('ft', i, architecture=arch, space='module_chain')
        store.record_result('ft', i, {'default': acc, 'val_acc': acc, 'test_acc': acc, 'params': 1000},
                            status='SUCCEEDED')
    table = make_report(store, 'ft', tmp_path / 'report').table
    assert 'ModuleNet: fine-tuned searched chains vs. the original networks' in table
    assert 'best searched test error 10.00% vs best original 15.00%' in table
    assert 'original r18' in table and 'searched' in table


def test_finetune_defaults_to_the_final_population_with_searched_heads(kb, tmp_path):
    """Default fine-tuning set = the final population (+ originals), each starting from its search trial's
    head: the unfrozen chain computes exactly what the searched chain computed."""
    from types import SimpleNamespace

    from nni_xfer.strategies.modulenet.evaluate import kb_modules
    from nni_xfer.strategies.modulenet.finetune import finetune_config
    built = kb[0]
    store = KnowledgeStore(tmp_path / 'store.db')
    r18 = {f'module_{j}': 'r18' for j in range(5)}
    other = {**ARCH, 'module_4': 'r18'}
    searched = run_trial(_spec(built, ARCH), reporter=Quiet())
    for i, (arch, metrics) in enumerate([(ARCH, searched), (r18, {'default': 9.0}), (other, {'default': -9.0})]):
        store.record_proposal('search', i, architecture=arch, space='module_chain')
        store.record_result('search', i, metrics, status='SUCCEEDED')
    # `other` scored best but did not survive; the original r18 is in the final population
    store.save_strategy_state('search', {'extra': {'population': [{'architecture': r18, 'objectives': [9.0]},
                                                                  {'architecture': ARCH, 'objectives': [0.5]}]}})
    search = tmp_path / 'search.yml'
    search.write_text(yaml.safe_dump({
        'experimentName': 'x', 'searchSpace': {}, 'trialCommand': 'python -m nni_xfer.trial', 'trialCodeDirectory': '.',
        'tuner': {'className': 'nni_xfer.tuner.XferTuner', 'classArgs': {
            'strategy': 'modulenet', 'space': 'module_chain', 'space_args': {'kb': str(built.root), 'head_units': [32]},
            'dataset': 'digits', 'dataset_args': DIGITS, 'evaluator': 'modulenet', 'mode': 'minimize'}}}))
    args = finetune_config(search, 'search', store=str(store.path), epochs=1)['tuner']['classArgs']
    v11 = {f'module_{j}': 'v11' for j in range(5)}
    assert args['strategy_args']['architectures'] == [ARCH, r18, v11]   # population by score, then originals
    init = args['strategy_args']['init']
    assert init['kind'] == 'kb_modules'
    assert init['heads'] == [{'architecture': ARCH, 'uri': searched['checkpoint'], 'sha256': searched['sha256']}]
    assert finetune_config(search, 'search', store=str(store.path), top_k=1)['tuner']['classArgs'][
        'strategy_args']['architectures'] == [ARCH, r18, v11]
    assert 'heads' not in finetune_config(search, 'search', store=str(store.path), searched_head=False)[
        'tuner']['classArgs']['strategy_args']['init']

    info = dataset_info('digits', **DIGITS)
    ft_space = build_space('module_chain', args['space_args'], info)
    lines = []
    ctx = SimpleNamespace(spec=SimpleNamespace(architecture=ARCH), extra_metrics={}, progress=lines.append)
    torch.manual_seed(123)
    model = freeze(ft_space, ARCH)
    kb_modules(model, init, ctx)
    assert ctx.extra_metrics['head_from'] == searched['checkpoint'] and 'loaded from the search' in lines[0]
    saved = torch.load(searched['checkpoint'], weights_only=True)['state_dict']
    for k, v in model.head.state_dict().items():
        assert torch.equal(v, saved[f'head.{k}']), k
    assert any(p.requires_grad for p in model.positions.parameters())     # fine-tuning: all weights train
    search_model = freeze(_space(built), ARCH)
    search_model.load_state_dict(saved)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), search_model.eval()(x), atol=1e-5)
    fresh = freeze(ft_space, r18)                                           # not searched with a head: fresh
    head0 = {k: v.clone() for k, v in fresh.head.state_dict().items()}
    kb_modules(fresh, init, SimpleNamespace(spec=SimpleNamespace(architecture=r18), extra_metrics={},
                                            progress=lines.append))
    assert all(torch.equal(v, head0[k]) for k, v in fresh.head.state_dict().items())
    with pytest.raises(ConfigError, match='^init.heads:'):
        kb_modules(fresh, {'kind': 'kb_modules', 'heads': [{'uri': 'x'}]}, ctx)


def test_kb_config_errors_name_the_field(tmp_path):
    from nni_xfer.strategies.modulenet.kb import KBConfig
    base = {'root': str(tmp_path / 'k'), 'sources': [{'name': 'a', 'arch': 'resnet18'}]}
    for bad, field in [({'sources': [{'arch': 'alexnet'}]}, 'kb.sources[0].arch'),
                       ({'sources': [{'arch': 'resnet18', 'width': 0}]}, 'kb.sources[0].width'),
                       ({'sources': [{'arch': 'resnet18', 'weights': 'imagenet'}]}, 'kb.sources[0].weights'),
                       ({'cells': 7}, 'kb.cells'), ({'dataset': 'nope'}, 'kb.dataset'),
                       ({'train': {'epochz': 1}}, 'kb.train.epochz'), ({'colour': 1}, 'kb.colour')]:
        with pytest.raises(ConfigError) as e:
            KBConfig.from_dict({**base, **bad})
        assert str(e.value).startswith(field + ':'), str(e.value)
    assert json.dumps(KBConfig.from_dict(base).sources[0].__dict__)
