"""EAT-NAS (Elastic Architecture Transfer, Fang et al. 2019): one package.

- :mod:`.strategy` — the ``eatnas`` strategy: tournament evolution (Algorithm 1), Eq. 1 score,
  population quality (Eq. 3), per-child parameter sharing, elastic transfer from a seed;
- :mod:`.retrain` and :mod:`.cli` — ``nni-xfer eatnas retrain`` (the top-k retraining stage);
- :mod:`.report` — the per-cycle report section (mean accuracy, std, Q; plot);
- :mod:`.seed` — resolving ``strategy_args.seed_from`` (a finished search in the knowledge store,
  or an explicit basic architecture and checkpoint).

The space (``mbv2_blocks``) owns the architecture grammar, the scale constraints and the
transformation function (Algorithm 3); the weights move through the ``eatnas_share`` initializer
of :mod:`nni_xfer.transfer.sharing`; the tournament and mutation helpers are
:mod:`nni_xfer.evolution`'s.
"""
from . import cli, report, retrain, seed, strategy  # noqa: F401  (registers)
from .strategy import EATNASStrategy  # noqa: F401
