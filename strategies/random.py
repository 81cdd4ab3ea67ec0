"""Random search: the baseline every method is compared against."""
from __future__ import annotations

from nni_xfer.errors import ConfigError
from nni_xfer.registry import STRATEGIES
from nni_xfer.strategy import BaseStrategy, Proposal, SpaceInfo, check_int


@STRATEGIES.register('random', description='Uniform random sampling of the space, no repeats (baseline)')
class RandomStrategy(BaseStrategy):
    """Uniform random search without repeated architectures.

    Args:
        space: the search space's dimensions.
        seed: RNG seed; the same seed gives the same proposals.
        max_trials: stop proposing after this many successful evaluations (``None``: only NNI's
            ``maxTrialNumber`` limits the search).
        max_retries: draws tried to find an architecture not seen yet before giving up.
    """

    #: proposals do not depend on results (the shared contract checks it both ways)
    uses_scores = False

    def __init__(self, space: SpaceInfo, seed: int = 0, mode: str = 'maximize',
                 max_trials: int | None = None, max_retries: int = 1000):
        super().__init__(space, seed=seed, mode=mode)
        if not space.dims:
            raise ConfigError('space', f'random search needs categorical choices; space {space.name!r} has none')
        self.max_trials = check_int(max_trials, 'strategy_args.max_trials', minimum=1, allow_none=True)
        self.max_retries = check_int(max_retries, 'strategy_args.max_retries', minimum=1)

    @property
    def done(self) -> bool:
        succeeded = sum(1 for h in self.history if h['status'] == 'SUCCEEDED')
        if self.max_trials is not None and succeeded + len(self.pending) >= self.max_trials:
            return succeeded >= self.max_trials or len(self._seen) >= self.space.size()
        return len(self._seen) >= self.space.size() and not self.pending

    def _propose(self, trial_id: int) -> Proposal | None:
        if self.max_trials is not None:
            succeeded = sum(1 for h in self.history if h['status'] == 'SUCCEEDED')
            if succeeded + len(self.pending) >= self.max_trials:
                return None
        for _ in range(self.max_retries):
            arch = self.random_architecture()
            if not self.seen(arch):
                return Proposal(arch)
        return None
