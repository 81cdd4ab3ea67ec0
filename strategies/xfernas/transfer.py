"""The XferNAS transfer network: one universal predictor shared by every task plus a residual per task.

f^(i)(z) = f^(u)(z) + r^(i)(z) (paper Eq. 5). ``f^(u)`` has the shape of NAO's performance
predictor (an MLP ending in a sigmoid); every residual ``r^(i)`` is an MLP of the same width whose
last layer starts at zero, so a task without observations is predicted by the universal part
alone (phase 1) and its residual grows only from its own observations (phase 2). Training is
joint over every task's observations (Eq. 7): each example carries its task index and only that
task's residual enters its prediction, while the universal part sees all of them.

>>> import torch
>>> net = TransferPredictor(code_dim=8, num_tasks=3, hidden=16, layers=2)
>>> z = torch.randn(4, 8)
>>> bool(torch.allclose(net(z, torch.tensor([0, 1, 2, 2])), net.universal_output(z)))  # residuals start at 0
True
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

#: ways to scale each task's scores before training (``strategy_args.target_scaling``)
SCALINGS = ('minmax', 'standard')


def scale_targets(values: Sequence[float], tasks: Sequence[int], how: str = 'minmax') -> np.ndarray:
    """Each task's scores mapped into [0, 1] for the predictor.

    ``minmax``: NAO's scaling, per task (the task's worst -> 0, best -> 1). ``standard``: per-task
    standard scores ``0.5 + z / 6`` (±3 sd -> [0, 1]); unlike min-max, the spread does not depend on
    how many results a task has — min-max stretches a task with a handful of results (its best of
    10 is 1.0, like the best of 200 of a source task) further than the sources, and the shared
    universal network then bends towards those few points. A constant task maps to 0.5.
    """
    from nni_xfer.strategies.nao.model import minmax

    if how == 'minmax':
        return minmax(values, tasks)
    if how != 'standard':
        raise ValueError(f'unknown scaling {how!r} (allowed: {", ".join(SCALINGS)})')
    v = np.asarray(values, dtype=np.float64)
    groups = np.asarray(tasks)
    out = np.full_like(v, 0.5)
    for g in np.unique(groups):
        idx = groups == g
        sd = v[idx].std()
        if sd > 1e-12:
            out[idx] = 0.5 + (v[idx] - v[idx].mean()) / (6.0 * sd)
    return out


def _mlp(code_dim: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = code_dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    mods.append(nn.Linear(width, 1))
    return nn.Sequential(*mods)


class TransferPredictor(nn.Module):
    """Universal + per-task residual predictor over an architecture code ``z`` (batch × code_dim).

    Args:
        code_dim: width of the pooled architecture code (NAO: 96).
        num_tasks: number of tasks (sources first, the target last by convention of the strategy).
        hidden, layers, dropout: MLP shape of the universal and of every residual network
            (NAO's PyTorch predictor: 3 × 200, dropout 0.1).
        universal_sigmoid: end the universal network in a sigmoid like NAO's predictor (targets are
            min-max normalised to [0, 1]); the residuals are linear so f^(i) = f^(u) + r^(i) holds
            literally.
        residual_l2: ridge penalty ``residual_l2 * sum ||W||^2`` over the weight matrices of every
            residual network, added to the training loss by :meth:`penalty` (0: none, only the
            optimiser's weight decay). A residual fitted to a handful of target results without
            it interpolates them and ranks unseen cells worse than f^(u) alone (issue 20).
    """

    def __init__(self, code_dim: int, num_tasks: int, hidden: int = 200, layers: int = 3, dropout: float = 0.1,
                 universal_sigmoid: bool = True, residual_l2: float = 0.0):
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f'num_tasks must be >= 1, got {num_tasks}')
        if not residual_l2 >= 0:
            raise ValueError(f'residual_l2 must be >= 0, got {residual_l2}')
        self.code_dim, self.hidden, self.layers, self.dropout = code_dim, hidden, layers, dropout
        self.universal_sigmoid = universal_sigmoid
        self.residual_l2 = float(residual_l2)
        self.universal = _mlp(code_dim, hidden, layers, dropout)
        self.residuals = nn.ModuleList(self._new_residual() for _ in range(num_tasks))

    def _new_residual(self) -> nn.Sequential:
        r = _mlp(self.code_dim, self.hidden, self.layers, self.dropout)
        nn.init.zeros_(r[-1].weight)
        nn.init.zeros_(r[-1].bias)
        return r

    def penalty(self) -> torch.Tensor | float:
        """The residuals' ridge term ``residual_l2 * sum ||W||^2`` (weights, not biases) for the loss."""
        if self.residual_l2 == 0:
            return 0.0
        return self.residual_l2 * sum((m.weight ** 2).sum() for r in self.residuals for m in r
                                      if isinstance(m, nn.Linear))

    @property
    def num_tasks(self) -> int:
        return len(self.residuals)

    def universal_output(self, z: torch.Tensor) -> torch.Tensor:
        """f^(u)(z), shape (batch,)."""
        out = self.universal(z).squeeze(-1)
        return torch.sigmoid(out) if self.universal_sigmoid else out

    def residual_output(self, z: torch.Tensor, task: torch.Tensor | int) -> torch.Tensor:
        """r^(task)(z), shape (batch,); ``task`` is one index or one index per row."""
        if isinstance(task, int):
            return self.residuals[task](z).squeeze(-1)
        task = task.to(z.device).long()
        out = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for t in torch.unique(task).tolist():
            rows = task == t
            out[rows] = self.residuals[t](z[rows]).squeeze(-1)
        return out

    def forward(self, z: torch.Tensor, task: torch.Tensor | int | None = None) -> torch.Tensor:
        """f^(task)(z) = f^(u)(z) + r^(task)(z); ``task=None`` gives f^(u) alone."""
        u = self.universal_output(z)
        if task is None:
            return u
        return u + self.residual_output(z, task)


def transfer_loss(prediction: torch.Tensor, target: torch.Tensor, reconstruction_nll: torch.Tensor | float,
                  alpha: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, L_pred) with L = α·L_pred + (1 − α)·L_rec (paper Eq. 6).

    ``prediction``/``target`` hold the observations of *every* task in the batch, each predicted
    with its own task's f^(i) (Eq. 7). L_pred is their mean squared error: NAO's code implements the
    sum of its paper as a mean over the batch, and XferNAS keeps NAO's loss and α = 0.8.
    """
    l_pred = torch.mean((prediction - target) ** 2)
    return alpha * l_pred + (1.0 - alpha) * reconstruction_nll, l_pred


def fit_predictor(net: TransferPredictor, z: torch.Tensor, task: torch.Tensor, y: torch.Tensor, *,
                  epochs: int = 300, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 64,
                  seed: int = 0) -> list[float]:
    """Fit the predictor alone on fixed codes (α = 1, no decoder): unit tests and the Fig. 3 study.

    Adam with NAO's learning rate and weight decay, plus the residuals' ridge term
    (:meth:`TransferPredictor.penalty`); returns the mean loss of each epoch.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    net.train()
    n = z.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss, _ = transfer_loss(net(z[idx], task[idx]), y[idx], 0.0, alpha=1.0)
            loss = loss + net.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / max(n, 1))
    net.eval()
    return losses
