"""Parameter-free connections between knowledge-base modules (ModuleNet paper Sec. III-D, Eq. 1–3).

- Channel Pool (ChP) reduces C channels to C_out by average pooling along the channel axis. When
  C_out divides C the kernel is C / C_out (Eq. 1). Otherwise, with η = gcd(C, C_out) and
  k' = C / η, the output is the concatenation over i = 0 … C_out/η − 1 of ChP with kernel k' applied
  to the channels rotated left by i (Eq. 3; the paper's example: 192 → 128, η = 64, k' = 3).
- Channel DePool (ChDP) increases C to C_out by repeating channels: out[l] = in[l mod C] (Eq. 2 and
  its sliced generalisation with ⌈C_out / C⌉ copies).
- Resolutions (paper Sec. III-B: "we keep the resolution of input unchanged by adjusting the
  reduction in the preceding block"): :func:`plan_resolution` decides, for a chain, which of each
  preceding module's own reductions to drop (when the next module wants a larger map) and where a
  parameter-free pool is added after it (when it wants a smaller one), so no map is ever upsampled
  (``resolution: adjust``, the default). ``resolution: resize`` keeps the modules as they are and
  resizes between them (max pooling by an integer factor, adaptive average pooling otherwise,
  nearest upsampling to enlarge) — for comparison.

>>> x = torch.arange(6.).view(1, 6, 1, 1)
>>> channel_pool(x, 4).flatten().tolist()
[1.0, 4.0, 2.0, 3.0]
>>> channel_depool(torch.arange(3.).view(1, 3, 1, 1), 7).flatten().tolist()
[0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nni_xfer.errors import ConfigError

KINDS = ('pool', 'conv1x1', 'conv1x1_bn_relu')
RESOLUTIONS = ('adjust', 'resize')


def plan_resolution(in_sizes: list[int], factors: list[list[int]]) -> tuple[list[int], list[int]]:
    """Which reductions each module of a chain keeps so that no map is upsampled.

    ``in_sizes[j]``: the side of the map module ``j`` was trained on; ``factors[j]``: its own
    reductions in forward order. Returns ``(sides, keep)``: the side of the map module ``j``
    actually receives, and how many of its reductions it keeps (the first ``keep[j]``; the rest are
    dropped). Walking back from the last module, module ``j − 1`` keeps as many reductions as still
    leave its output at least the side module ``j`` receives (a larger remainder is pooled by the
    connection). When even dropping all of them leaves its output too small (its own input is smaller
    than what module ``j`` wants — a chain that mixes sources with different early reductions), module
    ``j − 1`` receives module ``j``'s side instead of its own and keeps none: no upsampling, at the
    cost of running that module at a larger resolution than it was trained on.
    """
    c = len(in_sizes)
    sides = list(in_sizes)
    keep = [len(f) for f in factors]
    for j in range(c - 1, 0, -1):
        p, need = j - 1, sides[j]
        if in_sizes[p] < need:
            sides[p], keep[p] = need, 0
            continue
        k, side = 0, in_sizes[p]
        for f in factors[p]:
            if side // f < need:
                break
            side //= f
            k += 1
        keep[p] = k
    return sides, keep


def _pool_index(c: int, c_out: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Indices (c_out, k') of the input channels averaged into each output channel (Eq. 1 and 3)."""
    eta = math.gcd(c, c_out)
    k = c // eta
    base = torch.arange(eta, device=device).unsqueeze(1) * k + torch.arange(k, device=device)  # (η, k')
    shifts = torch.arange(c_out // eta, device=device).view(-1, 1, 1)                        # (terms, 1, 1)
    return ((base.unsqueeze(0) + shifts) % c).reshape(c_out, k), k


def channel_pool(x: torch.Tensor, c_out: int) -> torch.Tensor:
    """ChP: (N, C, H, W) → (N, c_out, H, W), c_out < C, with the gcd generalisation when c_out ∤ C."""
    c = x.shape[1]
    if not 0 < c_out <= c:
        raise ValueError(f'channel_pool: c_out must be in 1..{c}, got {c_out}')
    if c_out == c:
        return x
    if c % c_out == 0:
        n, _, h, w = x.shape
        return x.reshape(n, c_out, c // c_out, h, w).mean(dim=2)
    idx, k = _pool_index(c, c_out, x.device)
    gathered = x.index_select(1, idx.flatten())  # (N, c_out * k', H, W)
    n, _, h, w = x.shape
    return gathered.reshape(n, c_out, k, h, w).mean(dim=2)


def channel_depool(x: torch.Tensor, c_out: int) -> torch.Tensor:
    """ChDP: (N, C, H, W) → (N, c_out, H, W), c_out > C: out[l] = x[l mod C]."""
    c = x.shape[1]
    if c_out < c:
        raise ValueError(f'channel_depool: c_out must be >= {c}, got {c_out}')
    if c_out == c:
        return x
    return x.repeat(1, -(-c_out // c), 1, 1)[:, :c_out]


def resize_spatial(x: torch.Tensor, size: int) -> torch.Tensor:
    """Parameter-free resolution change of a square map to ``size``×``size``."""
    h = x.shape[-1]
    if h == size:
        return x
    if h > size:
        if h % size == 0:
            return F.max_pool2d(x, kernel_size=h // size, stride=h // size)
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode='nearest')


class Connection(nn.Module):
    """Joins neighbouring modules: resolution ``in_size`` → ``out_size``, then channels.

    ``kind='pool'``: Channel Pool / DePool, no parameters (the paper's). ``kind='conv1x1'``: a trainable
    plain 1×1 conv (with bias; the paper's Fig. 10 ablation, Sec. V-C); ``kind='conv1x1_bn_relu'``: a
    1×1 conv + BN + ReLU (the earlier ablation connection, kept for comparison). The resolution step is
    :func:`resize_spatial` (under ``resolution: adjust`` the chain only ever asks it to shrink a map).
    """

    def __init__(self, in_channels: int, out_channels: int, in_size: int, out_size: int, kind: str = 'pool'):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError('connection', f'{kind!r} is not a connection kind', allowed=KINDS)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size, self.out_size = in_size, out_size
        self.kind = kind
        self.conv = None
        if kind == 'conv1x1':
            self.conv = nn.Conv2d(in_channels, out_channels, 1)
        elif kind == 'conv1x1_bn_relu':
            self.conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                                      nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize_spatial(x, self.out_size)
        if self.conv is not None:
            return self.conv(x)
        if self.out_channels < self.in_channels:
            return channel_pool(x, self.out_channels)
        if self.out_channels > self.in_channels:
            return channel_depool(x, self.out_channels)
        return x

    def extra_repr(self) -> str:
        op = self.kind if self.conv is not None else (
            'ChP' if self.out_channels < self.in_channels else 'ChDP' if self.out_channels > self.in_channels else 'id')
        return (f'{op}: {self.in_channels}→{self.out_channels} channels, '
                f'{self.in_size}²→{self.out_size}²')
