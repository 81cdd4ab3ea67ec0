"""The warm trial launcher under real nnictl: ``trialCommand: python -m nni_xfer.launch``.

Three mock-evaluator trials, two at a time (the first two clients race to start the one server),
proposal 2 set to fail. What NNI gets must be what ``python -m nni_xfer.trial`` gives it: each
trial its own parameters (NNI's runtime, imported by the server, re-reads the trial's variables in
the child), final metrics in the REST API equal to the store's, the failing trial FAILED with its
one-line error in the store, the trial's prints in its ``trial.log`` (the portal's trial log).
"""
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from nni_xfer.runtime import warm_server as launcher
from nni_xfer.adapters.experiments import create, final_metrics, finished, free_port, nnictl, wait, write_config
from nni_xfer.spec import REPORTED_METRICS, proposal_id_of
from nni_xfer.store import KnowledgeStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_trials_through_the_warm_launcher(tmp_path):
    assert os.environ['NNI_XFER_HOME'].startswith(str(tmp_path))  # conftest: a private launcher folder
    config, store_path = write_config(tmp_path, max_trials=3, concurrency=2, evaluator='mock',
                                      evaluator_args={'fail_on': [2]})
    raw = yaml.safe_load(config.read_text())
    raw['trialCommand'] = f'{sys.executable} -m nni_xfer.launch'
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    port = free_port()
    exp = None
    try:
        exp = create(config, port)
        _, ts = wait(port, finished(3), timeout=240)
        servers = launcher.servers(all_keys=True)
    finally:
        if exp is not None:
            nnictl('stop', exp)
        stopped = launcher.stop(all_keys=True)  # by the pids in the private launcher folder
    # one server (the racing clients started one), and every trial went through it
    assert len(servers) == 1 and servers[0]['running'], servers
    assert stopped == [servers[0]['pid']]
    server_log = Path(servers[0]['log']).read_text()
    by_status = {t['trialJobId']: t['status'] for t in ts}
    assert sorted(by_status.values()) == ['FAILED', 'SUCCEEDED', 'SUCCEEDED'], by_status
    for tid in by_status:
        assert f'{tid}: pid ' in server_log, server_log[-3000:]
    evs = {e.trial_id: e for e in KnowledgeStore(store_path).evaluations(experiment_id=exp) if e.trial_id}
    assert set(evs) == set(by_status)
    exp_dir = tmp_path / 'nni-experiments' / exp / 'environments' / 'local-env' / 'trials'
    for t in ts:
        tid = t['trialJobId']
        e = evs[tid]
        # the trial ran the parameters NNI gave *this* trial
        params = json.loads(t['hyperParameters'][0])['parameters']
        assert proposal_id_of(params) == e.proposal_id and params['architecture'] == e.architecture
        trial_log = (exp_dir / tid / 'trial.log').read_text()
        assert f'[nni-xfer trial {e.proposal_id} ' in trial_log  # prints reach the portal's trial log
        if t['status'] == 'SUCCEEDED':
            m = final_metrics(t)
            assert list(m) == list(REPORTED_METRICS), m   # NNI gets the few; the store gets them all
            stored = {k: v for k, v in e.metrics.items() if k in m}
            assert stored == m and {'trainable_params', 'trial_seconds'} <= set(e.metrics)
            assert e.status == 'SUCCEEDED' and Path(e.checkpoint).is_file()
        else:
            assert e.proposal_id == 2 and e.status == 'FAILED'
            assert e.error == 'RuntimeError: mock evaluator: proposal 2 is set to fail (fail_on)'
            stderr = (exp_dir / tid / 'trial.stderr').read_text()
            assert 'nni-xfer trial failed: RuntimeError: mock evaluator: proposal 2' in stderr
