import os
import warnings

import pytest

warnings.filterwarnings('ignore', message='.*is found to be not a nn.Module.*')


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep every test's knowledge store and checkpoints under its own tmp dir."""
    monkeypatch.setenv('NNI_XFER_HOME', str(tmp_path / 'xfer-home'))
    yield


@pytest.fixture
def one_torch_thread():
    """Tiny tensors (the EAS controller): intra-op threads only add contention on a busy 2-core box."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
