"""ModuleNet (knowledge-inherited NAS with a knowledge base of modules): one package.

- :mod:`.strategy` — the ``modulenet`` NSGA-II strategy;
- :mod:`.kb`, :mod:`.decompose`, :mod:`.connections` — knowledge base build (torchvision sources cut
  into modules), its reader, parameter-free Channel Pool / DePool;
- :mod:`.score` — err − α·lrate + β·sim; :mod:`.evaluate` — the ``modulenet`` evaluator and the
  ``kb_modules`` initializer;
- :mod:`.finetune`, :mod:`.cli`, :mod:`.report` — the fine-tuning stage, ``kb build`` /
  ``modulenet finetune`` subcommands and the report's comparison table.

Its space is :mod:`nni_xfer.search_spaces.module_chain`, which reads the knowledge base through
:mod:`.kb`.
"""
from . import cli, evaluate, report, strategy  # noqa: F401  (registers)
from .strategy import ModuleNetStrategy  # noqa: F401
