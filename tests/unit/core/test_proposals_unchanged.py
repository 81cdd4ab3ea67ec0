"""Refactors keep search behaviour: every strategy proposes the same architectures, inits and
parents for the same seed as recorded before (``tests/data/proposals_before.json``).

The cases are each registered strategy's quick contract case (:func:`contract_case`, seeds 0 and 1,
batches of 2 finished in reverse order, every fifth trial failed) plus the method/space pairs the
contract cases do not reach (EAS on the DenseNet space). A strategy registered later has no
recorded proposals and is skipped with a message, not failed; re-record only when a change of
behaviour is intended::

    NNI_XFER_RECORD_PROPOSALS=1 python -m pytest -q tests/unit/core/test_proposals_unchanged.py
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from nni_xfer.registry import STRATEGIES
from nni_xfer.strategy import SpaceInfo
from nni_xfer.testing.strategy_contract import ContractCase, contract_case, drive

FIXTURE = Path(__file__).resolve().parents[2] / 'data' / 'proposals_before.json'
RECORD = os.environ.get('NNI_XFER_RECORD_PROPOSALS') == '1'
SEEDS = (0, 1)

pytestmark = pytest.mark.timeout(300)


def _dn_metrics(strategy, architecture):
    cap = sum(map(sum, architecture['growths'])) + architecture['stem'] + sum(architecture['transitions'])
    acc = 1 - math.exp(-cap / 150)
    return {'default': acc, 'val_acc': acc, 'checkpoint': f'/ckpt/{cap}.pt', 'sha256': '0' * 64}


def _densenet_case() -> ContractCase:
    space = SpaceInfo('eas_densenet', {}, {}, extra={
        'kind': 'eas_densenet', 'start': {'growths': [[4, 4], [4, 4], [4]], 'stem': 8, 'transitions': [8, 10]},
        'growth_rates': [4, 6, 8]})
    return ContractCase(space, {'networks_per_episode': 3, 'wider_steps': 2, 'deeper_steps': 2,
                                'episodes_per_stage': 50}, _dn_metrics, budget=12)


#: method/space pairs beyond the registered strategies' own contract cases
EXTRA = {'eas@eas_densenet': ('eas', _densenet_case), 'eas_random@eas_densenet': ('eas_random', _densenet_case)}


def case_names() -> list[str]:
    return sorted([*STRATEGIES.names(), *EXTRA])


def run_case(name: str, seed: int) -> list[dict]:
    strategy_name, make_case = EXTRA.get(name, (name, None))
    case = make_case() if make_case else contract_case(strategy_name)
    strategy = case.make(STRATEGIES.get(strategy_name), seed)
    props = drive(strategy, case.budget, batch=2, fail=lambda i: i % 5 == 4, metrics=case.metrics)
    return json.loads(json.dumps(props, sort_keys=True))


def _recorded() -> dict:
    return json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}


@pytest.mark.usefixtures('one_torch_thread')
@pytest.mark.parametrize('name', case_names())
def test_same_proposals_as_recorded(name):
    torch.manual_seed(0)
    got = {str(seed): run_case(name, seed) for seed in SEEDS}
    if RECORD:
        data = _recorded()
        data[name] = got
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(data, sort_keys=True, indent=1) + '\n')
        return
    recorded = _recorded()
    if name not in recorded:
        pytest.skip(f'no recorded proposals for {name!r} (a strategy added after the recording)')
    for seed in SEEDS:
        want = recorded[name][str(seed)]
        assert len(got[str(seed)]) == len(want), f'{name} seed {seed}: number of proposals changed'
        for g, w in zip(got[str(seed)], want):
            assert g == w, f'{name} seed {seed} trial {w["id"]}: proposal changed'
