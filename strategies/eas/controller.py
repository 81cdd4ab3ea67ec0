"""EAS reinforcement-learning meta-controller (Cai et al., AAAI 2018) in plain PyTorch.

Networks of the EAS plain-CNN space are token lists (``conv-<filters>-<kernel>``, ``pool``,
``fc-<units>``; the final classifier has no token, the last ``pool`` is the global pool). The
controller reads a token list with a bidirectional LSTM encoder and proposes transformations with
two actors (design notes: ``shared/design/methods.md`` §1.1–1.4, §1.8):

* :class:`WiderActor` — one shared sigmoid per position: widen this conv/FC layer by one step of
  its width list or not (pool, padding and already-maximal layers are masked out).
* :class:`DeeperActor` — an LSTM cell started from the encoder's final state makes three softmax
  decisions: block (4 conv blocks + the fc block), layer inside the block (masked by the block's
  layer count and renormalised), kernel size (ignored for the fc block). A new layer is inserted
  right after the chosen one, with the same width and stride 1.

:class:`Controller` bundles encoder and actors, owns its Adam optimiser and the moving-average
baseline, and trains with REINFORCE: ``r = tan(acc·π/2)``; baseline updated *before* the advantage
``A = r − b``: ``baseline_rule='code'`` (default, the authors' code) ``b ← b + decay·(mean r − b)``
(the new batch mean weighs ``decay`` = 0.95), ``'paper'`` (the paper text's "exponential moving
average … with a decay of 0.95") ``b ← decay·b + (1 − decay)·mean r``; ``A`` divided by the batch
size; loss ``−Σ mask·log π·A − 1e-5·entropy``.

DenseNet variant (methods.md §1.7; ``kind='densenet'``, picked automatically from a vocabulary of
:func:`build_densenet_vocab`): a DenseNet-BC architecture ``{'growths', 'stem', 'transitions'}``
becomes the token list of :func:`densenet_tokens` — ``g<k>`` per dense layer and ``t`` per
transition, in network order. The stem has **no token**: it is not a controller decision (the
strategy widens it with a fixed rule at the end of an episode) and its width follows from the
growths, so a token would carry no information. The wider actor is the same shared sigmoid,
masked to dense layers whose growth is below the maximum of the growth list (a chosen layer moves
up one step); the deeper actor makes two decisions — dense block (3, masked to blocks that exist)
and position (20, masked to the block's layers) — and the new layer is a duplicate of the chosen
one inserted right after it (no kernel decision). Teacher forcing, REINFORCE and baseline are the
same as for plain CNNs.

All randomness of sampling goes through an explicit :class:`torch.Generator`; module weights are
initialised under ``torch.manual_seed(seed)`` (without disturbing the global RNG afterwards).
No NNI import here.
"""
from __future__ import annotations

import copy
import math
from typing import Iterable, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# the token grammar is the spaces' (one parser each); the controller only reads it
from nni_xfer.search_spaces.eas_densenet import (DENSE_N_BLOCKS, TRANSITION, apply_densenet_deeper,
                                                 apply_densenet_wider, densenet_layout, densenet_positions,
                                                 densenet_tokens, parse_dense_token)
from nni_xfer.search_spaces.eas_plain_cnn import (N_BLOCKS, apply_deeper, apply_wider, block_layout, parse_token,
                                                  widenable)

__all__ = [
    'PAD', 'EMBED_DIM', 'HIDDEN', 'N_BLOCKS', 'MAX_LAYERS', 'KERNELS',
    'build_vocab', 'encode', 'parse_token', 'block_layout', 'wider_mask', 'reward',
    'apply_wider', 'apply_deeper', 'DeeperDecision',
    'TRANSITION', 'DENSE_N_BLOCKS', 'DENSE_MAX_LAYERS', 'DENSE_MAX_LEN', 'build_densenet_vocab',
    'densenet_tokens', 'parse_dense_token', 'densenet_layout', 'densenet_positions', 'densenet_wider_mask',
    'apply_densenet_wider', 'apply_densenet_deeper',
    'Encoder', 'WiderActor', 'DeeperActor', 'Controller',
]

PAD = 'PAD'
EMBED_DIM = 16
HIDDEN = 50            # per direction; per-position encoder output is 2 * HIDDEN
MAX_LAYERS = 10        # layer-index head size
KERNELS = (1, 3, 5)
MAX_LEN = 50

# DenseNet variant (methods.md §1.7)
DENSE_MAX_LAYERS = 20  # position head size
DENSE_MAX_LEN = 64     # 3 blocks x 20 layers + 2 transitions fit; padding only, no weight depends on it



# --------------------------------------------------------------------------- tokens

def build_vocab(conv_widths: Iterable[int], kernels: Iterable[int] = KERNELS,
                fc_units: Iterable[int] = ()) -> dict[str, int]:
    """``{'PAD': 0, 'conv-<w>-<k>': …, 'fc-<u>': …, 'pool': last}`` in that order."""
    vocab = {PAD: 0}
    kernels = list(kernels)
    for w in conv_widths:
        for k in kernels:
            vocab[f'conv-{int(w)}-{int(k)}'] = len(vocab)
    for u in fc_units:
        vocab[f'fc-{int(u)}'] = len(vocab)
    vocab['pool'] = len(vocab)
    return vocab


def encode(tokens: Sequence[str], vocab: dict[str, int], max_len: int = MAX_LEN) -> tuple[torch.Tensor, int]:
    """Token ids padded with 0 to ``max_len`` (LongTensor) and the true length."""
    tokens = list(tokens)
    if not tokens:
        raise ValueError('encode: empty token list')
    if len(tokens) > max_len:
        raise ValueError(f'encode: {len(tokens)} tokens exceed max_len={max_len}')
    ids = torch.zeros(max_len, dtype=torch.long)
    for i, t in enumerate(tokens):
        if t == PAD or t not in vocab:
            raise ValueError(f'encode: token {t!r} at position {i} is not in the vocabulary')
        ids[i] = vocab[t]
    return ids, len(tokens)


def wider_mask(tokens: Sequence[str], conv_widths: Sequence[int], fc_units: Sequence[int],
               max_len: int = MAX_LEN) -> torch.Tensor:
    """Float mask (``max_len``): 1 for conv/fc layers below the maximum of their width list."""
    mask = torch.zeros(max_len)
    mask[widenable(tokens, conv_widths, fc_units)] = 1.0
    return mask


def reward(acc):
    """EAS reward ``tan(acc·π/2)`` (float in → float out; sequences/tensors → tensor)."""
    if isinstance(acc, (int, float)):
        return math.tan(float(acc) * math.pi / 2)
    return torch.tan(torch.as_tensor(acc, dtype=torch.float64) * math.pi / 2)


class DeeperDecision(NamedTuple):
    """Block index, layer index inside the block, kernel size (ignored in the fc block; ``None``
    for DenseNet, which has no kernel decision)."""
    block: int
    layer: int
    kernel: int | None = None


# --------------------------------------------------------------------------- DenseNet tokens

def build_densenet_vocab(growths: Iterable[int]) -> dict[str, int]:
    """``{'PAD': 0, 'g<k>': … (growth list, ascending), 't': last}`` for the DenseNet variant."""
    vocab = {PAD: 0}
    for k in sorted({int(k) for k in growths}):
        vocab[f'g{k}'] = len(vocab)
    vocab[TRANSITION] = len(vocab)
    return vocab


def densenet_wider_mask(tokens: Sequence[str], growths: Sequence[int], max_len: int = DENSE_MAX_LEN) -> torch.Tensor:
    """Float mask (``max_len``): 1 for dense layers whose growth is below the growth list's maximum."""
    mask = torch.zeros(max_len)
    gmax = max(growths)
    for i, t in enumerate(tokens):
        kind, k = parse_dense_token(t)
        if kind == 'dense' and k < gmax:
            mask[i] = 1.0
    return mask


# --------------------------------------------------------------------------- modules

class Encoder(nn.Module):
    """Embedding 16 (uniform ±√3) → 1-layer bidirectional LSTM, 50 units per direction."""

    def __init__(self, vocab_size: int, embed_dim: int = EMBED_DIM, hidden: int = HIDDEN):
        super().__init__()
        self.hidden = hidden
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        nn.init.uniform_(self.embedding.weight, -math.sqrt(3.0), math.sqrt(3.0))
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=1, bidirectional=True)

    def forward(self, ids: torch.Tensor, length: int):
        """``ids`` (L,) padded ids, ``length`` true length.

        Returns ``outputs`` (L, 100) — zeros at padded positions — and ``(h0, c0)`` each (100,):
        forward-direction final state concatenated with backward-direction final state.
        """
        L = ids.shape[0]
        emb = self.embedding(ids[:length]).unsqueeze(1)        # (length, 1, E) — padding never read
        out, (h, c) = self.lstm(emb)
        out = out.squeeze(1)
        if length < L:
            out = torch.cat([out, out.new_zeros(L - length, out.shape[1])], 0)
        h0 = torch.cat([h[0, 0], h[1, 0]], 0)
        c0 = torch.cat([c[0, 0], c[1, 0]], 0)
        return out, (h0, c0)


class WiderActor(nn.Module):
    """Shared Linear(100→1)+sigmoid: probability to widen the layer at each position."""

    def __init__(self, in_dim: int = 2 * HIDDEN):
        super().__init__()
        self.linear = nn.Linear(in_dim, 1)

    def probs(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(outputs).squeeze(-1))

    def sample(self, outputs, mask, generator: torch.Generator | None = None, return_log_prob: bool = False):
        """One Bernoulli draw per position; masked positions are always 0. Returns a LongTensor
        (L,) — or ``(decisions, log_prob, entropy)`` with ``return_log_prob``."""
        p = self.probs(outputs)
        draws = torch.bernoulli(p.detach(), generator=generator)
        decisions = (draws * mask).long()
        if return_log_prob:
            return decisions, self.log_prob(outputs, mask, decisions), self.entropy(outputs, mask)
        return decisions

    def _logits(self, outputs):
        return self.linear(outputs).squeeze(-1)

    def log_prob(self, outputs, mask, decisions) -> torch.Tensor:
        """Σ over masked positions of log π(decision)."""
        z = self._logits(outputs)
        d = torch.as_tensor(decisions, dtype=z.dtype)
        lp = d * F.logsigmoid(z) + (1 - d) * F.logsigmoid(-z)
        return (lp * mask).sum()

    def entropy(self, outputs, mask) -> torch.Tensor:
        z = self._logits(outputs)
        p = torch.sigmoid(z)
        ent = -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))
        return (ent * mask).sum()


class DeeperActor(nn.Module):
    """LSTMCell(100) from the encoder's final state; block → layer → kernel softmax decisions.

    With ``kernels=()`` (the DenseNet variant) there is no kernel head and only the block and
    layer decisions are made; decisions are then ``DeeperDecision(block, layer, None)``.
    """

    def __init__(self, hidden: int = 2 * HIDDEN, embed_dim: int = EMBED_DIM, n_blocks: int = N_BLOCKS,
                 max_layers: int = MAX_LAYERS, kernels: Sequence[int] = KERNELS):
        super().__init__()
        self.n_blocks, self.max_layers, self.kernels = n_blocks, max_layers, tuple(int(k) for k in kernels)
        self.cell = nn.LSTMCell(embed_dim, hidden)
        self.start = nn.Parameter(torch.empty(embed_dim).uniform_(-math.sqrt(3.0), math.sqrt(3.0)))
        self.block_embed = nn.Embedding(n_blocks, embed_dim)        # input of step 1
        self.layer_embed = nn.Embedding(max_layers, embed_dim)      # input of step 2
        for e in (self.block_embed, self.layer_embed):
            nn.init.uniform_(e.weight, -math.sqrt(3.0), math.sqrt(3.0))
        self.block_head = nn.Linear(hidden, n_blocks)
        self.layer_head = nn.Linear(hidden, max_layers)
        self.kernel_head = nn.Linear(hidden, len(self.kernels)) if self.kernels else None
        self.n_steps = 3 if self.kernels else 2

    # masks ---------------------------------------------------------------
    def block_mask(self, layer_counts: Sequence[int]) -> torch.Tensor:
        """Blocks without layers cannot receive a new layer."""
        m = torch.tensor([c > 0 for c in layer_counts], dtype=torch.bool)
        if not m.any():
            raise ValueError('DeeperActor: network has no conv/fc layer to deepen')
        return m

    def layer_mask(self, count: int) -> torch.Tensor:
        return torch.arange(self.max_layers) < min(int(count), self.max_layers)

    @staticmethod
    def _masked_probs(logits, mask):
        """softmax, invalid entries zeroed, renormalised (== softmax over the valid entries)."""
        return torch.softmax(logits.masked_fill(~mask, float('-inf')), -1)

    # core ------------------------------------------------------------------
    def _run(self, state, layer_counts, decisions=None, generator=None):
        """Run the three steps (two without kernels); sample where ``decisions`` is None, else
        teacher-force them.

        Returns (block, layer, kernel_index) — (block, layer) without kernels —, [probs per step],
        log_prob, entropy (kernel step excluded from log_prob/entropy for the fc block).
        """
        layer_counts = list(layer_counts)
        if len(layer_counts) != self.n_blocks:
            raise ValueError(f'DeeperActor: expected {self.n_blocks} block sizes, got {len(layer_counts)}')
        h, c = state[0].unsqueeze(0), state[1].unsqueeze(0)
        x = self.start.unsqueeze(0)
        chosen, probs_list, lps, ents = [], [], [], []
        for step in range(self.n_steps):
            h, c = self.cell(x, (h, c))
            if step == 0:
                logits, mask = self.block_head(h)[0], self.block_mask(layer_counts)
            elif step == 1:
                logits, mask = self.layer_head(h)[0], self.layer_mask(layer_counts[chosen[0]])
            else:
                logits, mask = self.kernel_head(h)[0], torch.ones(len(self.kernels), dtype=torch.bool)
            p = self._masked_probs(logits, mask)
            if decisions is None:
                a = int(torch.multinomial(p.detach(), 1, generator=generator).item())
            else:
                a = int(decisions[step])
                if not mask[a]:
                    raise ValueError(f'DeeperActor: recorded decision {a} at step {step} is masked out')
            logp = torch.log_softmax(logits.masked_fill(~mask, float('-inf')), -1)
            ent = -(p * logp.masked_fill(~mask, 0.0)).sum()
            counted = not (step == 2 and chosen[0] == self.n_blocks - 1)
            if counted:
                lps.append(logp[a])
                ents.append(ent)
            chosen.append(a)
            probs_list.append(p)
            if step == 0:
                x = self.block_embed(torch.tensor([a]))
            elif step == 1:
                x = self.layer_embed(torch.tensor([a]))
        return tuple(chosen), probs_list, torch.stack(lps).sum(), torch.stack(ents).sum()

    def _to_indices(self, decision) -> tuple[int, ...]:
        if not self.kernels:
            b, l = (int(v) for v in tuple(decision)[:2])
            return b, l
        b, l, k = (int(v) for v in decision)
        if k not in self.kernels:
            raise ValueError(f'DeeperActor: kernel {k} not in {self.kernels}')
        return b, l, self.kernels.index(k)

    # public ------------------------------------------------------------------
    def sample(self, state, layer_counts, generator: torch.Generator | None = None, return_log_prob: bool = False):
        """Sample a :class:`DeeperDecision` (kernel given as size) — or ``(decision, log_prob,
        entropy)`` with ``return_log_prob``."""
        chosen, _, lp, ent = self._run(state, layer_counts, generator=generator)
        b, l = chosen[:2]
        d = DeeperDecision(b, l, self.kernels[chosen[2]] if self.kernels else None)
        return (d, lp, ent) if return_log_prob else d

    def log_prob(self, state, layer_counts, decision) -> torch.Tensor:
        """Teacher-forced log π of a recorded decision."""
        return self._run(state, layer_counts, decisions=self._to_indices(decision))[2]

    def entropy(self, state, layer_counts, decision) -> torch.Tensor:
        """Entropy along the teacher-forced path of a recorded decision."""
        return self._run(state, layer_counts, decisions=self._to_indices(decision))[3]

    def distributions(self, state, layer_counts, decision) -> list[torch.Tensor]:
        """The three (two without kernels) masked, renormalised probability vectors along a
        recorded decision."""
        return self._run(state, layer_counts, decisions=self._to_indices(decision))[1]


def _is_dense_token(token) -> bool:
    try:
        parse_dense_token(token)
    except ValueError:
        return False
    return True


def _widths_from_vocab(vocab):
    convs, kernels, fcs = set(), set(), set()
    for tok in vocab:
        if tok in (PAD, 'pool'):
            continue
        kind, w, k = parse_token(tok)
        if kind == 'conv':
            convs.add(w)
            kernels.add(k)
        else:
            fcs.add(w)
    return sorted(convs), sorted(kernels), sorted(fcs)


BASELINE_RULES = ('code', 'paper')


def update_baseline(b: float, mean_r: float, decay: float = 0.95, rule: str = 'code') -> float:
    """One baseline update with a batch's mean reward.

    ``'code'`` — the authors' code: ``b + decay·(mean_r − b)`` (the new mean weighs ``decay``);
    ``'paper'`` — the paper text's exponential moving average: ``decay·b + (1 − decay)·mean_r``.

    >>> update_baseline(1.0, 3.0, 0.95, 'code'), round(update_baseline(1.0, 3.0, 0.95, 'paper'), 6)
    (2.9, 1.1)
    """
    if rule == 'code':
        return b + decay * (mean_r - b)
    if rule == 'paper':
        return decay * b + (1.0 - decay) * mean_r
    raise ValueError(f'update_baseline: rule must be one of {BASELINE_RULES}, got {rule!r}')


class Controller(nn.Module):
    """Encoder + Net2Wider actor + Net2Deeper actor, Adam optimiser and REINFORCE baseline.

    The network kind follows from ``vocab``: a vocabulary of :func:`build_densenet_vocab`
    (``g<k>``/``t`` tokens) gives the DenseNet variant (``self.kind == 'densenet'``), otherwise
    the plain CNN (``'plain'``). Plain: ``conv_widths``/``fc_units``/``kernels`` default to the
    ones found in ``vocab``; ``max_len``/``n_blocks``/``max_layers`` default to 50/5/10.
    DenseNet: ``growths`` defaults to the growths of ``vocab``; ``max_len``/``n_blocks``/
    ``max_layers`` default to 64/3/20; there is no kernel decision.

    A trajectory is the list of steps ``(kind, tokens, decisions)`` taken for one network, kind
    ``'wider'`` (decisions: 0/1 per token) or ``'deeper'`` (decisions: a :class:`DeeperDecision`;
    for DenseNet ``(block, layer)`` or ``DeeperDecision(block, layer)``).
    """

    def __init__(self, vocab: dict[str, int], seed: int = 0, *, conv_widths=None, fc_units=None,
                 kernels=None, growths=None, max_len: int | None = None, n_blocks: int | None = None,
                 max_layers: int | None = None, lr: float = 2e-3, baseline_decay: float = 0.95,
                 entropy_coef: float = 1e-5, baseline_rule: str = 'code', fc_block: str = 'code'):
        super().__init__()
        self.fc_block = fc_block  # plain CNN: what the fc block offers (eas_plain_cnn.block_layout)
        if baseline_rule not in BASELINE_RULES:
            raise ValueError(f'Controller: baseline_rule must be one of {BASELINE_RULES}, got {baseline_rule!r}')
        self.baseline_rule = baseline_rule
        self.vocab = dict(vocab)
        dense = [t for t in vocab if t != PAD and _is_dense_token(t)]
        if dense and len(dense) != len(vocab) - (PAD in vocab):
            raise ValueError('Controller: vocab mixes DenseNet (g<k>, t) and plain CNN tokens')
        self.kind = 'densenet' if dense else 'plain'
        if self.kind == 'densenet':
            vg = sorted(parse_dense_token(t)[1] for t in dense if t != TRANSITION)
            self.growths = sorted(int(g) for g in growths) if growths is not None else vg
            if not self.growths:
                raise ValueError('Controller: no growths (vocab has no g<k> tokens)')
            self.conv_widths, self.fc_units, self.kernels = [], [], ()
            defaults = (DENSE_MAX_LEN, DENSE_N_BLOCKS, DENSE_MAX_LAYERS)
        else:
            vc, vk, vf = _widths_from_vocab(vocab)
            self.conv_widths = sorted(conv_widths) if conv_widths is not None else vc
            self.fc_units = sorted(fc_units) if fc_units is not None else vf
            self.kernels = tuple(kernels) if kernels is not None else tuple(vk or KERNELS)
            self.growths = []
            if not self.conv_widths:
                raise ValueError('Controller: no conv widths (vocab has no conv tokens)')
            defaults = (MAX_LEN, N_BLOCKS, MAX_LAYERS)
        max_len, n_blocks, max_layers = (d if v is None else int(v)
                                         for v, d in zip((max_len, n_blocks, max_layers), defaults))
        self.max_len, self.n_blocks = max_len, n_blocks
        self.baseline_decay, self.entropy_coef = baseline_decay, entropy_coef
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = Encoder(len(vocab))
            self.wider_actor = WiderActor(2 * HIDDEN)
            self.deeper_actor = DeeperActor(2 * HIDDEN, EMBED_DIM, n_blocks, max_layers, self.kernels)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.baseline = 0.0
        self.num_updates = 0

    # encoding ------------------------------------------------------------------
    def encode(self, tokens):
        ids, length = encode(tokens, self.vocab, self.max_len)
        return self.encoder(ids, length)

    def wider_mask(self, tokens) -> torch.Tensor:
        if self.kind == 'densenet':
            return densenet_wider_mask(tokens, self.growths, self.max_len)
        return wider_mask(tokens, self.conv_widths, self.fc_units, self.max_len)

    def layout(self, tokens) -> list[list[int]]:
        """Token positions of the layers of each block (``n_blocks`` lists)."""
        if self.kind == 'densenet':
            return densenet_layout(tokens, self.n_blocks)
        return block_layout(tokens, self.n_blocks, self.fc_block)

    def layer_counts(self, tokens) -> list[int]:
        return [len(b) for b in self.layout(tokens)]

    def apply_wider(self, tokens, decisions) -> list[str]:
        """Tokens after a wider step (:func:`apply_wider` / :func:`apply_densenet_wider`)."""
        if self.kind == 'densenet':
            return apply_densenet_wider(tokens, decisions, self.growths)
        return apply_wider(tokens, decisions, self.conv_widths, self.fc_units)

    def apply_deeper(self, tokens, decision) -> list[str]:
        """Tokens after a deeper step (:func:`apply_deeper` / :func:`apply_densenet_deeper`)."""
        if self.kind == 'densenet':
            return apply_densenet_deeper(tokens, decision, self.n_blocks)
        return apply_deeper(tokens, decision, self.n_blocks, self.fc_block, self.fc_units)

    # acting ----------------------------------------------------------------------
    @torch.no_grad()
    def wider(self, tokens, generator: torch.Generator | None = None) -> list[int]:
        """0/1 widen decision per token (masked layers always 0)."""
        out, _ = self.encode(tokens)
        d = self.wider_actor.sample(out, self.wider_mask(tokens), generator)
        return [int(x) for x in d[:len(tokens)]]

    @torch.no_grad()
    def wider_probs(self, tokens) -> torch.Tensor:
        """Widen probability per token (unmasked sigmoid outputs)."""
        out, _ = self.encode(tokens)
        return self.wider_actor.probs(out)[:len(tokens)]

    @torch.no_grad()
    def deeper(self, tokens, generator: torch.Generator | None = None) -> DeeperDecision:
        _, state = self.encode(tokens)
        return self.deeper_actor.sample(state, self.layer_counts(tokens), generator)

    def step_log_prob(self, kind: str, tokens, decisions):
        """(log π, entropy) of one recorded step under the current weights (with grad)."""
        out, state = self.encode(tokens)
        if kind == 'wider':
            mask = self.wider_mask(tokens)
            d = torch.zeros(self.max_len)
            dec = torch.as_tensor([int(x) for x in decisions][:len(tokens)], dtype=torch.float32)
            d[:len(dec)] = dec
            return self.wider_actor.log_prob(out, mask, d), self.wider_actor.entropy(out, mask)
        if kind == 'deeper':
            counts = self.layer_counts(tokens)
            idx = self.deeper_actor._to_indices(decisions)
            _, _, lp, ent = self.deeper_actor._run(state, counts, decisions=idx)
            return lp, ent
        raise ValueError(f"unknown step kind {kind!r} (expected 'wider' or 'deeper')")

    # learning --------------------------------------------------------------------
    def update(self, trajectories, rewards=None, *, accuracies=None) -> dict:
        """One REINFORCE step on a batch of networks.

        ``rewards`` are already-transformed rewards (use :func:`reward` on accuracies), or pass
        ``accuracies=`` and they are transformed here. Baseline first (:func:`update_baseline`), then
        ``A = (r − b) / batch``, loss
        ``−Σ mask·log π·A − entropy_coef·Σ entropy``; one Adam step.
        """
        if (rewards is None) == (accuracies is None):
            raise ValueError('update: pass exactly one of rewards or accuracies')
        if rewards is None:
            rewards = [reward(float(a)) for a in accuracies]
        r = [float(x) for x in rewards]
        n = len(trajectories)
        if n == 0 or len(r) != n:
            raise ValueError(f'update: {n} trajectories but {len(r)} rewards')
        mean_r = sum(r) / n
        self.baseline = update_baseline(self.baseline, mean_r, self.baseline_decay, self.baseline_rule)
        adv = [(ri - self.baseline) / n for ri in r]

        pg = torch.zeros(())
        ent = torch.zeros(())
        for traj, a in zip(trajectories, adv):
            for kind, tokens, decisions in traj:
                lp, e = self.step_log_prob(kind, tokens, decisions)
                pg = pg + lp * a
                ent = ent + e
        loss = -pg - self.entropy_coef * ent
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        return {'loss': float(loss.detach()), 'baseline': float(self.baseline), 'mean_reward': mean_r,
                'advantages': adv, 'entropy': float(ent.detach())}

    # persistence -------------------------------------------------------------------
    def state_dict(self, *args, **kwargs):
        """Plain dict: module weights, optimiser state, baseline (deep copies).

        Called with nn.Module arguments (``destination``/``prefix``/…) it behaves like
        :meth:`nn.Module.state_dict` so nesting the controller in another module still works.
        """
        if args or kwargs:
            return super().state_dict(*args, **kwargs)
        return copy.deepcopy({'model': super().state_dict(), 'optimizer': self.optimizer.state_dict(),
                              'baseline': float(self.baseline), 'num_updates': self.num_updates})

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        if not ('model' in state and 'optimizer' in state):
            return super().load_state_dict(state, strict=strict, assign=assign)
        res = super().load_state_dict(state['model'], strict=strict)
        self.optimizer.load_state_dict(copy.deepcopy(state['optimizer']))
        self.baseline = float(state.get('baseline', 0.0))
        self.num_updates = int(state.get('num_updates', 0))
        return res
