"""Tests over the registries: every registered plugin is tested without a test of its own.

- every strategy runs the shared contract suite on its declared quick case
  (:func:`nni_xfer.testing.strategy_contract.contract_case`);
- every search space builds, gives an ``example()`` sample, freezes it and runs forward;
- every plugin module imports (a broken one would otherwise only log a warning).
"""
from __future__ import annotations

import pytest
import torch

from nni_xfer.registry import ALL, COMMANDS, IMPORT_ERRORS, REPORT_SECTIONS, SEARCH_SPACES, STRATEGIES
from nni_xfer.testing.strategy_contract import StrategyContract, contract_case

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def test_every_plugin_module_imports():
    for reg in list(ALL.values()) + [COMMANDS, REPORT_SECTIONS]:
        reg.names()
    assert IMPORT_ERRORS == {}


@pytest.mark.timeout(120)
class TestEveryStrategy(StrategyContract):
    @pytest.fixture(params=STRATEGIES.names())
    def case(self, request):
        case = contract_case(request.param)
        self.budget = case.budget
        self._metrics = case.metrics
        return request.param, case

    def metrics(self, strategy, architecture):
        return self._metrics(strategy, architecture)

    @pytest.fixture
    def space(self, case):
        return case[1].space

    @pytest.fixture
    def make(self, case):
        name, c = case
        cls = STRATEGIES.get(name)
        return lambda space, seed: c.make(cls, seed)


class _Data:
    """Dataset dimensions a space is built for (digits-like, small)."""
    in_channels, num_classes, image_size = 1, 10, 8


def _space_args(name: str, tmp_path) -> dict:
    cls = SEARCH_SPACES.get(name)
    fn = getattr(cls, 'contract_space_args', None)
    return fn(tmp_path) if fn is not None else {}


@pytest.mark.timeout(300)
@pytest.mark.parametrize('name', SEARCH_SPACES.names())
def test_every_space_builds_freezes_and_runs(name, tmp_path):
    from nni_xfer.space import build_space, freeze, space_info
    args = _space_args(name, tmp_path)
    space = build_space(name, args, _Data)
    info = space_info(name, args, space)
    assert hasattr(space, 'example'), f'space {name!r} declares no example() sample'
    sample = space.example()
    net = freeze(space, sample).eval()
    size = space.contract_image_size or _Data.image_size   # the space protocol's hook (None: any size)
    with torch.no_grad():
        out = net(torch.randn(2, _Data.in_channels, size, size))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, _Data.num_classes)
    for label, choices in info.dims.items():      # a categorical sample uses the space's choices
        if label in sample:
            assert sample[label] in choices
