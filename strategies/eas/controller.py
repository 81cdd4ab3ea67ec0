"""EAS reinforcement-learning meta-controller (Cai et al., AAAI 2018) in plain PyTorch.

The controller knows no space: a network is a token list of the space's grammar (a
:class:`TokenGrammar`, the space's EAS operators; e.g. ``conv-<filters>-<kernel>`` / ``pool`` /
``fc-<units>`` for :mod:`nni_xfer.search_spaces.eas_plain_cnn`, ``g<k>`` / ``t`` for
:mod:`nni_xfer.search_spaces.eas_densenet`). It reads a token list with a bidirectional LSTM
encoder and proposes transformations with two actors (docs/fidelity.md, EAS):

* :class:`WiderActor` — one shared sigmoid per position: widen this layer by one step of its
  width list or not; positions the grammar does not call widenable (pools, transitions, padding,
  layers already at their maximum) are masked out.
* :class:`DeeperActor` — an LSTM cell started from the encoder's final state makes the softmax
  decisions block (the grammar's ``n_blocks``, masked to blocks with layers), layer inside the
  block (``max_layers``, masked by the block's layer count and renormalised) and, when the grammar
  has ``deeper_kernels``, the kernel size (ignored for the last block, the fc block). What a
  decision inserts is the grammar's business (plain CNN: a layer of the same width right after the
  chosen one; DenseNet: a duplicate of the chosen layer).

:class:`Controller` bundles encoder and actors, owns its Adam optimiser and the moving-average
baseline, and trains with REINFORCE: ``r = tan(acc·π/2)``; baseline updated *before* the advantage
``A = r − b``: ``baseline_rule='code'`` (default, the authors' code) ``b ← b + decay·(mean r − b)``
(the new batch mean weighs ``decay`` = 0.95), ``'paper'`` (the paper text's "exponential moving
average … with a decay of 0.95") ``b ← decay·b + (1 − decay)·mean r``; ``A`` divided by the batch
size; loss ``−Σ mask·log π·A − 1e-5·entropy``.

All randomness of sampling goes through an explicit :class:`torch.Generator`; module weights are
initialised under ``torch.manual_seed(seed)`` (without disturbing the global RNG afterwards).
No NNI import and no space import here.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple, Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    'PAD', 'EMBED_DIM', 'HIDDEN', 'TokenGrammar', 'encode', 'reward', 'DeeperDecision',
    'Encoder', 'WiderActor', 'DeeperActor', 'Controller', 'BASELINE_RULES', 'update_baseline',
]

PAD = 'PAD'            # padding token, id 0
EMBED_DIM = 16
HIDDEN = 50            # per direction; per-position encoder output is 2 * HIDDEN


class TokenGrammar(Protocol):
    """What the controller needs of a space's token grammar; a space's EAS operators (the
    ``eas_operators`` hook of :mod:`nni_xfer.space`) provide it."""

    #: every token, in embedding order (the controller adds :data:`PAD` as id 0)
    vocabulary: Sequence[str]
    #: padding length of a token list (the controller may raise it to the longest reachable list)
    max_len: int
    #: size of the deeper actor's block head and of :meth:`layout`
    n_blocks: int
    #: size of the deeper actor's layer head (positions beyond it are never chosen)
    max_layers: int
    #: kernel sizes of the deeper actor's kernel head; empty: no kernel decision
    deeper_kernels: Sequence[int]

    def widenable(self, tokens: Sequence[str]) -> list[int]:
        """Positions a wider decision may widen (the wider actor's mask)."""

    def layout(self, tokens: Sequence[str]) -> list[list[int]]:
        """Token positions of the layers of each of the ``n_blocks`` blocks (the deeper actor's masks)."""


# --------------------------------------------------------------------------- tokens

def encode(tokens: Sequence[str], vocab: dict[str, int], max_len: int) -> tuple[torch.Tensor, int]:
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


def reward(acc):
    """EAS reward ``tan(acc·π/2)`` (float in → float out; sequences/tensors → tensor)."""
    if isinstance(acc, (int, float)):
        return math.tan(float(acc) * math.pi / 2)
    return torch.tan(torch.as_tensor(acc, dtype=torch.float64) * math.pi / 2)


class DeeperDecision(NamedTuple):
    """Block index, layer index inside the block, kernel size (ignored in the fc block; ``None``
    for a grammar without kernel decision, e.g. DenseNet)."""
    block: int
    layer: int
    kernel: int | None = None


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

    def __init__(self, hidden: int, embed_dim: int, n_blocks: int, max_layers: int, kernels: Sequence[int]):
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

    ``grammar`` (a :class:`TokenGrammar`) gives the vocabulary, the head sizes and the masks;
    ``max_len`` (default ``grammar.max_len``) is the padding length of a token list.

    A trajectory is the list of steps ``(kind, tokens, decisions)`` taken for one network, kind
    ``'wider'`` (decisions: 0/1 per token) or ``'deeper'`` (decisions: a :class:`DeeperDecision`,
    or its list form ``[block, layer(, kernel)]``).
    """

    def __init__(self, grammar: TokenGrammar, seed: int = 0, *, max_len: int | None = None, lr: float = 2e-3,
                 baseline_decay: float = 0.95, entropy_coef: float = 1e-5, baseline_rule: str = 'code'):
        super().__init__()
        if baseline_rule not in BASELINE_RULES:
            raise ValueError(f'Controller: baseline_rule must be one of {BASELINE_RULES}, got {baseline_rule!r}')
        self.baseline_rule = baseline_rule
        self.grammar = grammar
        self.vocab = {PAD: 0, **{t: i + 1 for i, t in enumerate(grammar.vocabulary)}}
        if len(self.vocab) != len(grammar.vocabulary) + 1:
            raise ValueError('Controller: the grammar\'s vocabulary repeats a token or holds the padding token')
        self.max_len = int(grammar.max_len if max_len is None else max_len)
        self.n_blocks = int(grammar.n_blocks)
        self.kernels = tuple(int(k) for k in grammar.deeper_kernels)
        self.baseline_decay, self.entropy_coef = baseline_decay, entropy_coef
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = Encoder(len(self.vocab))
            self.wider_actor = WiderActor(2 * HIDDEN)
            self.deeper_actor = DeeperActor(2 * HIDDEN, EMBED_DIM, self.n_blocks, int(grammar.max_layers),
                                            self.kernels)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.baseline = 0.0
        self.num_updates = 0

    # encoding ------------------------------------------------------------------
    def encode(self, tokens):
        ids, length = encode(tokens, self.vocab, self.max_len)
        return self.encoder(ids, length)

    def wider_mask(self, tokens) -> torch.Tensor:
        """Float mask (``max_len``): 1 at the grammar's widenable positions."""
        mask = torch.zeros(self.max_len)
        mask[list(self.grammar.widenable(tokens))] = 1.0
        return mask

    def layout(self, tokens) -> list[list[int]]:
        """Token positions of the layers of each block (``n_blocks`` lists)."""
        return self.grammar.layout(tokens)

    def layer_counts(self, tokens) -> list[int]:
        return [len(b) for b in self.layout(tokens)]

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
