"""NNI's web portal in a real headless Chromium (issue 17): the Hyper-parameter tab plots one axis per
architecture choice and numeric metrics, and nothing renders as ``[object Object]``.

Needs Chromium (Debian: ``apt-get install chromium``; or ``NNI_XFER_CHROMIUM=/path``) and the
``playwright`` Python package (its driver only: the test launches the system Chromium). Skips otherwise.
"""
import os
import shutil
import time

import pytest

from nni_xfer.nnictl import create, final_metrics, finished, free_port, nnictl, wait, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get('NNI_XFER_CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
LABELS = ['width1', 'depth1', 'kernel1', 'width2', 'depth2', 'kernel2']  # simple_cnn's NNI labels


def hyper_parameter_axes(port: int, screenshot: str | None = None) -> tuple[list[str], str]:
    """Open the Trials detail page, switch to the Hyper-parameter tab; its axis labels and the page HTML."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 900})
            page.goto(f'http://127.0.0.1:{port}/detail', wait_until='networkidle')
            page.get_by_text('Hyper-parameter', exact=True).click()
            page.wait_for_selector('.parcoords svg .dimension', timeout=30_000)
            time.sleep(1)  # the chart's transition
            axes = page.eval_on_selector_all('.parcoords svg .dimension text.label',
                                             'els => els.map(e => e.textContent)')
            if screenshot:
                page.screenshot(path=screenshot)
            return axes, page.content()
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason='no chromium (apt-get install chromium)')
def test_hyper_parameter_tab_is_readable(tmp_path):
    pytest.importorskip('playwright.sync_api', reason='pip install playwright (the driver; no browser download)')
    config, _ = write_config(tmp_path, max_trials=2, concurrency=2, evaluator='mock', evaluator_args={})
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(2), timeout=240)
        assert [t['status'] for t in ts] == ['SUCCEEDED'] * 2
        assert all(isinstance(v, (int, float)) for t in ts for v in final_metrics(t).values())
        axes, html = hyper_parameter_axes(port, str(tmp_path / 'hyper-parameter.png'))
    finally:
        nnictl('stop', exp)
    assert axes[:len(LABELS)] == LABELS, axes   # one axis per architecture choice, in the space's order
    assert 'default' in axes and 'val_acc' in axes
    for hidden in ('architecture', 'space', 'init', 'dataset_args', 'checkpoint', 'sha256', 'trial_id',
                   'mutation_summary', 'proposal_id'):
        assert hidden not in axes, (hidden, axes)
    assert '[object Object]' not in html
