"""XferNAS (Wistuba 2019): NAO with a transfer predictor trained on every earlier search in the store.

Built on the ``nao`` strategy: this package imports ``nni_xfer.strategies.nao`` (the one allowed
import of another method's package) and reuses its encoder, decoder, latent gradient step and
search loop unchanged; only the performance predictor is replaced by the transfer network of
:mod:`.transfer` (universal + per-task residual MLPs, f^(i) = f^(u) + r^(i)).

- :mod:`.transfer` — the transfer network and the joint loss (Eq. 5–7).
- :mod:`.sources` — tasks, source knowledge read from the knowledge store, CSV/JSON import.
- :mod:`.build_sources` — sources configs → one random-search exp.yml per source task.
- :mod:`.strategy` — the ``xfernas`` strategy (phases 1 and 2 on NAO's search loop).
- :mod:`.report` — report section marking phase 1 / phase 2 proposals.
- :mod:`.cli` — ``nni-xfer xfernas import FILE`` / ``nni-xfer xfernas sources CONFIG``.
"""
from . import cli, report  # noqa: F401  (register the ``xfernas`` subcommands and report section)
from .strategy import XferController, XferNASStrategy  # noqa: F401
from .transfer import TransferPredictor  # noqa: F401
