"""Every shipped exp.yml passes `nni-xfer check`; each class of bad config gives one named line."""
from pathlib import Path

import pytest
import yaml

from nni_xfer.cli import check_config, main

ROOT = Path(__file__).resolve().parents[2]
KB_CONFIGS = sorted(ROOT.glob('examples/**/kb_*.yml'))   # ModuleNet knowledge-base configs, not exp.yml
EXAMPLES = sorted(p for p in ROOT.glob('examples/**/*.yml') if p not in KB_CONFIGS)
QUICK = ROOT / 'examples' / 'quickstart' / 'exp.yml'

pytestmark = pytest.mark.timeout(120)


def _stand_in_kb(kb_name: str) -> None:
    """A small untrained knowledge base with the sources of the example kb config named ``kb_name``.

    ``nni-xfer check`` builds the space, which reads the knowledge base; the real ones are built by
    ``nni-xfer kb build`` (minutes to days), so the check runs against same-named stand-ins.
    """
    from nni_xfer.strategies.modulenet.kb import build_kb
    for path in KB_CONFIGS:
        raw = yaml.safe_load(path.read_text())
        if raw['root'] == kb_name:
            sources = [{'name': s['name'], 'arch': s['arch'], 'width': 0.125, 'epochs': 0} for s in raw['sources']]
            build_kb({'root': kb_name, 'dataset': 'synthetic', 'dataset_args': {'in_channels': 3, 'image_size': 32},
                      'cells': raw.get('cells', 5), 'input_size': raw.get('input_size', 32), 'sources': sources},
                     progress=lambda m: None)
            return
    raise AssertionError(f'no examples/**/kb_*.yml has root {kb_name!r}')


@pytest.mark.parametrize('path', EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in EXAMPLES])
def test_example_configs_pass_check(path):
    args = yaml.safe_load(path.read_text())['tuner']['classArgs']
    if args['space'] == 'module_chain':
        assert check_config(path)[0].startswith('tuner.classArgs.space_args.kb: no knowledge base')
        _stand_in_kb(args['space_args']['kb'])
    assert check_config(path) == []


@pytest.mark.parametrize('path', KB_CONFIGS, ids=[str(p.relative_to(ROOT)) for p in KB_CONFIGS])
def test_example_kb_configs_are_valid(path):
    from nni_xfer.strategies.modulenet.kb import KBConfig
    cfg = KBConfig.from_dict(yaml.safe_load(path.read_text()))
    assert len(cfg.sources) >= 4


def _bad(tmp_path, mutate):
    cfg = yaml.safe_load(QUICK.read_text())
    mutate(cfg)
    p = tmp_path / 'exp.yml'
    p.write_text(yaml.safe_dump(cfg))
    return check_config(p)


def _args(cfg):
    return cfg['tuner']['classArgs']


@pytest.mark.parametrize('mutate,expect', [
    (lambda c: _args(c).update(strategy='nope'), 'tuner.classArgs.strategy: unknown strategy'),
    (lambda c: _args(c).update(space='nope'), 'tuner.classArgs.space: unknown search space'),
    (lambda c: _args(c).update(dataset='nope'), 'tuner.classArgs.dataset: unknown dataset'),
    (lambda c: _args(c).update(seed='x'), 'tuner.classArgs.seed: expected integer'),
    (lambda c: _args(c).pop('space'), 'tuner.classArgs.space: missing required argument'),
    (lambda c: _args(c).update(strategy_args={'bogus': 1}), 'tuner.classArgs.strategy_args.bogus: unknown argument'),
    (lambda c: _args(c).update(evaluator_args={'epochz': 1}), 'tuner.classArgs.evaluator_args.epochz'),
    (lambda c: _args(c).update(space_args={'widths': [16], 'nope': 1}), 'tuner.classArgs.space_args.nope'),
    (lambda c: _args(c).update(mode='up'), 'tuner.classArgs.mode: unknown mode'),
    (lambda c: c.update(trainingService={'platform': 'nosuch'}), 'NNI schema:'),
    (lambda c: c.update(trialConcurrency=-1), 'trialConcurrency: -1 is not allowed (NNI requires trial_concurrency > 0)'),
    (lambda c: c.update(trialConcurrency=0), 'trialConcurrency: 0 is not allowed'),
    (lambda c: _args(c).update(dataset_args={'val_size': 1.5}), 'tuner.classArgs.dataset_args.val_size: expected a '
                                                                'fraction in (0, 1) or a whole number'),
    (lambda c: _args(c).update(space_args={'widths': [16, -32, 'x']}), 'tuner.classArgs.space_args.widths: -32'),
])
def test_bad_configs_give_one_named_line(tmp_path, mutate, expect):
    problems = _bad(tmp_path, mutate)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expect), problems


def test_yaml_error_names_line_and_column_once(tmp_path, capsys):
    p = tmp_path / 'broken.yml'
    p.write_text('a: [1,\n b: 2\n')
    assert main(['check', str(p)]) == 1
    out = capsys.readouterr().out.strip()
    assert out.count(str(p)) == 1 and 'not valid YAML: line 3, column 1' in out, out


def test_unknown_strategy_lists_allowed_values(tmp_path):
    problems = _bad(tmp_path, lambda c: _args(c).update(strategy='nope'))
    from nni_xfer.registry import STRATEGIES
    assert 'allowed: ' + ', '.join(STRATEGIES.names()) in problems[0]
    assert 'random' in STRATEGIES.names()


def test_check_exit_codes(tmp_path, capsys):
    assert main(['check', str(QUICK)]) == 0
    p = tmp_path / 'bad.yml'
    p.write_text(QUICK.read_text().replace('strategy: random', 'strategy: nope'))
    assert main(['check', str(p)]) == 1
    assert 'tuner.classArgs.strategy' in capsys.readouterr().out


@pytest.mark.parametrize('dataset_args', [{'val_size': 0.2}, {'val_size': 500}, {'limit_train': 100, 'seed': 3}])
def test_dataset_loading_args_are_accepted(tmp_path, dataset_args):
    assert _bad(tmp_path, lambda c: _args(c).update(dataset_args=dataset_args)) == []


@pytest.mark.parametrize('dataset_args,key', [
    ({'val_size': 'x'}, 'val_size'),
    ({'val_size': 0.0}, 'val_size'),
    ({'limit_train': -1}, 'limit_train'),
    ({'download': 'yes'}, 'download'),
])
def test_bad_dataset_loading_args_are_named(tmp_path, dataset_args, key):
    problems = _bad(tmp_path, lambda c: _args(c).update(dataset_args=dataset_args))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f'tuner.classArgs.dataset_args.{key}'), problems
