import os
import warnings

import pytest

warnings.filterwarnings('ignore', message='.*is found to be not a nn.Module.*')


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep every test's knowledge store and checkpoints under its own tmp dir."""
    monkeypatch.setenv('NNI_XFER_HOME', str(tmp_path / 'xfer-home'))
    yield
