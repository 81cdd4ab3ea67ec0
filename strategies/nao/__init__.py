"""NAO (Luo et al., NeurIPS 2018): encoder, performance predictor, decoder and gradient steps in
the continuous architecture space, over the ``nasnet_cells`` space.

``model`` holds the controller (importable by XferNAS, which swaps the predictor); ``strategy``
the ``nao`` search strategy plugin.
"""
from .model import MLPPredictor, NAOConfig, NAOController, minmax  # noqa: F401
from .strategy import NAOStrategy, rank_correlations  # noqa: F401,E402
