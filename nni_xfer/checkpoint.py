"""Checkpoints: written atomically (temp file + rename), loaded with ``weights_only=True``."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError


def default_checkpoint_root() -> Path:
    home = Path(os.environ.get('NNI_XFER_HOME', Path.home() / '.nni-xfer'))
    return home / 'checkpoints'


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> tuple[str, str]:
    """Write ``obj`` to ``path`` atomically; return (absolute path, sha256)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # A plain absolute path, not a file:// URI: NNI's message decoder (json_tricks) strips
    # '//'-comments and would cut a URI out of the trial's final metrics.
    return str(path.resolve()), sha256_file(path)


def uri_to_path(uri: str) -> Path:
    if uri.startswith('file://'):
        from urllib.parse import unquote, urlparse
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


def load_checkpoint(uri: str, sha256: str | None = None, map_location: str | torch.device = 'cpu') -> dict:
    """Load a checkpoint by URI or path; a :class:`CheckpointError` naming the file if it is bad."""
    path = uri_to_path(uri)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    if sha256 is not None and sha256_file(path) != sha256:
        raise CheckpointError(f'checkpoint is corrupt (sha256 mismatch): {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f'checkpoint is corrupt ({type(exc).__name__}): {path}') from exc
