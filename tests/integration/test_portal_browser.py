"""NNI's web portal in a real headless Chromium, for every built-in search space (issues 17, 25).

Each space runs its README example through ``nni-xfer run --keep`` (the quickstart as it is; the
other examples with the mock evaluator and a budget of 3 trials, so a child with a parent exists),
then the Hyper-parameter tab is opened and checked: at most :data:`PORTAL_MAX_AXES` axes in all (the
summary's, at most :data:`PORTAL_SUMMARY_MAX`, then one per key of :data:`REPORTED_METRICS`, the only
final metrics NNI gets), every axis name and tick label at most :data:`LABEL_LIMIT` characters (no JSON
document on an axis), nothing rendered as ``[object Object]``, and the lineage axis ``parent_trial``
naming the NNI trial id of a real trial of the experiment; the store keeps the metrics NNI did not
get. A screenshot per space is written next to the test's files (``NNI_XFER_TEST_ARTIFACTS`` sets the
folder) and recorded as the test's ``screenshot`` property.

Needs Chromium (Debian: ``apt-get install chromium``; or ``NNI_XFER_CHROMIUM=/path``) and the
``playwright`` Python package (its driver only: the test launches the system Chromium). Skips otherwise.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nni_xfer.adapters.experiments import final_metrics, free_port, nnictl, trials
from nni_xfer.spec import (PARENT_KEY, PORTAL_KEY, PORTAL_MAX_AXES, PORTAL_MAX_CHARS, PORTAL_SUMMARY_MAX,
                           REPORTED_METRICS)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get('NNI_XFER_CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
#: The longest axis name or tick label the portal may show (the summary's own limit).
LABEL_LIMIT = PORTAL_MAX_CHARS

#: space -> (README example, its classArgs/budget overrides for the test; None: run it as it is)
MOCK = {'evaluator': 'mock', 'evaluator_args': {}}
SPACES = {
    'simple_cnn': ('examples/quickstart/exp.yml', None),
    'eas_plain_cnn': ('examples/eas/quick_digits.yml',
                      {**MOCK, 'strategy_args': {'episodes_per_stage': 1, 'networks_per_episode': 2,
                                                 'wider_steps': 1, 'deeper_steps': 1}}),
    'eas_densenet': ('examples/eas/quick_densenet_digits.yml',
                     {**MOCK, 'strategy_args': {'episodes_per_stage': 1, 'networks_per_episode': 2,
                                                'wider_steps': 1, 'deeper_steps': 1}}),
    'mbv2_blocks': ('examples/eatnas/quick_digits.yml',
                    {**MOCK, 'strategy_args': {'population': 2, 'sample': 2, 'sub_objective': 'params',
                                               'target': 200000, 'patience': None}}),
    'module_chain': ('examples/modulenet/quick.yml',
                     {**MOCK, 'strategy_args': {'population': 2, 'generations': 1}}),
    'nasnet_cells': ('examples/nao/quick_digits.yml',
                     {**MOCK, 'strategy_args': {'seed_archs': 2, 'iterations': 1, 'new_per_iteration': 1,
                                                'top_k': 2, 'controller': {'epochs': 5, 'batch_size': 2}}}),
}


def _config(tmp: Path, example: str, overrides: dict | None) -> Path:
    """The README example with its own store and checkpoints under ``tmp`` (and the overrides)."""
    cfg = yaml.safe_load((ROOT / example).read_text())
    args = cfg['tuner']['classArgs']
    args.update(store=str(tmp / 'store.db'), checkpoint_root=str(tmp / 'checkpoints'))
    cfg['experimentWorkingDirectory'] = str(tmp / 'nni-experiments')
    cfg['trialCodeDirectory'] = cfg['tuner']['codeDirectory'] = str(tmp)
    if overrides is not None:
        args.update(overrides)
        cfg['maxTrialNumber'] = 3
    path = tmp / 'exp.yml'
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def hyper_parameter_view(port: int, screenshot: str | None = None) -> tuple[list[str], dict[str, list[str]], str]:
    """Open the Trials detail page, switch to the Hyper-parameter tab: its axis names, each axis's
    tick labels, and the page's HTML."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 900})
            page.goto(f'http://127.0.0.1:{port}/detail', wait_until='networkidle')
            page.get_by_text('Hyper-parameter', exact=True).click()
            page.wait_for_selector('.parcoords svg .dimension', timeout=30_000)
            time.sleep(1)  # the chart's transition
            dims = page.eval_on_selector_all(
                '.parcoords svg .dimension',
                'els => els.map(d => [d.querySelector("text.label")?.textContent ?? "",'
                '                     Array.from(d.querySelectorAll(".tick text")).map(t => t.textContent)])')
            if screenshot:
                page.locator('.parcoords').screenshot(path=screenshot)
            return [name for name, _ in dims], {name: ticks for name, ticks in dims}, page.content()
        finally:
            browser.close()


def _run_kept(config: Path, port: int, tmp: Path, env: dict) -> tuple[str, str]:
    """``nni-xfer run CONFIG --keep``: the experiment id and the command's output."""
    id_file = tmp / 'exp.id'
    r = subprocess.run([str(Path(sys.executable).parent / 'nni-xfer'), 'run', str(config), '--port', str(port), '--keep',
                        '--id-file', str(id_file)], cwd=tmp, env=env, capture_output=True, text=True, timeout=360)
    exp = id_file.read_text().strip() if id_file.exists() else None
    if r.returncode != 0:
        if exp:
            nnictl('stop', exp)
        raise AssertionError(f'nni-xfer run failed ({r.returncode}):\n{r.stdout}\n{r.stderr}')
    return exp, r.stdout + r.stderr


@pytest.mark.skipif(CHROMIUM is None, reason='no chromium (apt-get install chromium)')
@pytest.mark.parametrize('space', list(SPACES))
def test_hyper_parameter_view_is_readable(space, tmp_path, record_property):
    pytest.importorskip('playwright.sync_api', reason='pip install playwright (the driver; no browser download)')
    example, overrides = SPACES[space]
    # the examples' warm launcher (python -m nni_xfer.launch): its server, one per NNI_XFER_HOME, exits
    # 15 s after the last trial instead of holding ~0.9 GB for 10 minutes
    env = dict(os.environ, NNI_XFER_HOME=str(tmp_path / 'home'), NNI_XFER_LAUNCHER_IDLE='15')
    if space == 'module_chain':   # a small untrained knowledge base with the example's sources
        kb = yaml.safe_load((ROOT / example).read_text())['tuner']['classArgs']['space_args']['kb']
        r = subprocess.run([sys.executable, '-c', f'from tests.unit.test_examples import _stand_in_kb; _stand_in_kb({kb!r})'],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    config = _config(tmp_path, example, overrides)
    assert yaml.safe_load(config.read_text())['tuner']['classArgs']['space'] == space
    port = free_port()
    exp, output = _run_kept(config, port, tmp_path, env)
    shots = Path(os.environ.get('NNI_XFER_TEST_ARTIFACTS') or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f'portal-hyper-parameter-{space}.png'
    try:
        ts = trials(port)
        axes, ticks, html = hyper_parameter_view(port, str(shot))
    finally:
        nnictl('stop', exp)
    record_property('screenshot', str(shot))
    print(f'{space}: screenshot {shot}; {len(axes)} axes {axes}')
    assert [t['status'] for t in ts] == ['SUCCEEDED'] * len(ts) and ts, output
    assert all(list(final_metrics(t)) == list(REPORTED_METRICS) for t in ts), [final_metrics(t) for t in ts]
    assert all(isinstance(v, (int, float)) for t in ts for v in final_metrics(t).values())

    params = [json.loads(t['hyperParameters'][-1])['parameters'] for t in ts]
    summary_keys = list(params[0][PORTAL_KEY])
    assert len(summary_keys) <= PORTAL_SUMMARY_MAX and summary_keys[-1] == PARENT_KEY, summary_keys
    assert [a for a in axes if a in summary_keys] == summary_keys, axes   # one axis per summary entry
    assert 'default' in axes and 'inherited_acc' in axes
    # the whole view: the summary's axes and one per reported metric, nothing else, at most 12
    assert sorted(a for a in axes if a not in summary_keys) == sorted(REPORTED_METRICS), axes
    assert len(axes) <= PORTAL_MAX_AXES == 12, axes
    for hidden in ('architecture', 'space', 'init', 'dataset_args', 'checkpoint', 'sha256', 'trial_id',
                   'mutation_summary', 'proposal_id'):
        assert hidden not in axes, (hidden, axes)
    too_long = {a: [t for t in ticks[a] if len(t) > LABEL_LIMIT] for a in axes}
    assert all(len(a) <= LABEL_LIMIT for a in axes) and not any(too_long.values()), too_long
    assert '[object Object]' not in html

    # lineage: a child's parent_trial is the NNI trial id of the trial that ran its parent, on the
    # portal's axis too. Which trial ran which proposal comes from the store (the trial's own
    # NNI_TRIAL_JOB_ID): NNI 3.0 hands queued parameters to whichever trial asks first, so with 2
    # concurrent trials its own record of a trial's parameters can be the other trial's (README).
    from nni_xfer.store import KnowledgeStore
    evs = KnowledgeStore(tmp_path / 'store.db').evaluations(experiment_id=exp)
    ran = {e.proposal_id: e.trial_id for e in evs}
    assert set(ran.values()) == {t['trialJobId'] for t in ts}
    for e in evs:   # the metrics NNI did not get are in the store (the trial's artifacts file)
        assert {'trainable_params', 'inherited_acc', 'trial_seconds'} <= set(e.metrics), e.metrics
    parents = {p[PORTAL_KEY][PARENT_KEY] for p in params} - {'none'}
    if space in ('eas_plain_cnn', 'eas_densenet', 'mbv2_blocks', 'nasnet_cells'):
        assert parents, params
        for p in params:
            if p['parent'] is not None:
                assert p[PORTAL_KEY][PARENT_KEY] == ran[p['parent']]
        assert parents <= set(ticks[PARENT_KEY]), ticks[PARENT_KEY]
    else:
        assert not parents and ticks[PARENT_KEY] == ['none']
