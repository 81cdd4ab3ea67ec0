"""NAO controller: encoder, performance predictor, decoder, training and the latent gradient step.

Faithful to the NAO authors' code (choices where it differs from the paper: docs/fidelity.md, NAO). Pure PyTorch on token sequences; the
grammar of the tokens comes from the search space (:class:`nni_xfer.search_spaces.nasnet_cells.CellGrammar`
or any object with ``vocab_size``, ``seq_len``, ``decode_masks()`` and ``swap_branches()``).

Interface (stable; XferNAS builds on it)::

    ctrl = NAOController(grammar, seed=0, predictor=None, **NAOConfig fields)
    ctrl.fit(seqs, targets, tasks=None, epochs=None, seed=0)  # -> list of per-epoch dicts (loss, mse, nll)
    ctrl.predict(seqs, task=None)                             # -> np.ndarray (N,) predictor outputs
    ctrl.reconstruct(seqs)                                    # -> list of decoded sequences
    ctrl.generate(seed_seqs, n_new, is_new, task=None)        # -> list of dicts: seq, parent, lam,
                                                              #    pred_before, pred_after
    ctrl.state_dict() / ctrl.load_state_dict(state)           # JSON-safe (weights + Adam as base64)

* ``seqs``: lists of ints (``grammar.seq_len`` tokens each); ``targets``: floats already scaled to
  [0, 1] (:func:`minmax` does NAO's min-max scaling, per task); ``tasks``: optional ints, one per
  sequence, passed to the predictor (NAO ignores them; XferNAS's transfer predictor uses them).
* **Predictor protocol** (the replaceable part): an ``nn.Module`` whose
  ``forward(code, task=None)`` maps architecture codes ``(N, hidden)`` (and an optional
  ``LongTensor (N,)`` of task ids) to predictions ``(N,)``; ``task=None`` means the target task.
  Pass an instance (or a factory ``hidden -> module``) as ``predictor=``; default
  :class:`MLPPredictor`. The loss is ``trade_off · MSE(pred, target) + (1 − trade_off) · NLL``,
  plus ``predictor.penalty()`` when the predictor has one (XferNAS's residual ridge term).
* The latent step (:meth:`NAOController.generate`) differentiates ``predictor(code, task)`` with
  respect to the per-step encoder outputs ``h``, moves ``h' = h + λ∇h`` for λ = 1, 2, … up to
  ``max_lambda``, re-normalises per step, mean-pools, normalises, decodes greedily (constrained
  to valid cells) attending over ``h'``, and keeps each decoded sequence that ``is_new(seq)``
  accepts (it is called once per candidate; record what it accepts), stopping at ``n_new``.

Lower-level pieces: :class:`Encoder`, :class:`Decoder`, :class:`MLPPredictor`, :class:`NAOModel`.
"""
from __future__ import annotations

import base64
import io
import logging
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nni_xfer.errors import ConfigError

_logger = logging.getLogger(__name__)

__all__ = ['NAOConfig', 'Encoder', 'Decoder', 'MLPPredictor', 'NAOModel', 'NAOController', 'minmax']


@dataclass
class NAOConfig:
    """Controller hyper-parameters (defaults: the NAO authors' TF code as XferNAS ran it)."""

    embedding_size: int = 32       # per token; ``group`` tokens are concatenated per LSTM step
    group: int = 3                 # 32 x 3 = 96-wide steps (pitfall 4)
    hidden_size: int = 96
    dropout: float = 0.1
    mlp_layers: int = 0            # hidden layers of the default predictor (TF: 0 -> dense + sigmoid)
    mlp_hidden: int = 200
    trade_off: float = 0.8         # weight of the prediction MSE; 1 - trade_off on the reconstruction NLL
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 5.0
    epochs: int = 1000
    batch_size: int = 100
    swap_augment: bool = True
    max_lambda: int = 50

    @classmethod
    def from_kwargs(cls, field_prefix: str = 'strategy_args', **kw: Any) -> 'NAOConfig':
        names = {f.name: f.type for f in fields(cls)}
        for key in kw:
            if key not in names:
                raise ConfigError(f'{field_prefix}.{key}', 'unknown controller option', allowed=list(names))
        cfg = cls(**kw)
        cfg.validate(field_prefix)
        return cfg

    def validate(self, prefix: str = 'strategy_args') -> 'NAOConfig':
        def f(key):
            return f'{prefix}.{key}'

        for key in ('embedding_size', 'group', 'hidden_size', 'mlp_hidden', 'epochs', 'batch_size', 'max_lambda'):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == 'epochs' else 1):
                raise ConfigError(f(key), f'expected an integer >= {0 if key == "epochs" else 1}, got {v!r}')
        if not isinstance(self.mlp_layers, int) or isinstance(self.mlp_layers, bool) or self.mlp_layers < 0:
            raise ConfigError(f('mlp_layers'), f'expected an integer >= 0, got {self.mlp_layers!r}')
        for key, lo, hi in (('dropout', 0, 1), ('trade_off', 0, 1)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi or (key == 'dropout' and v == 1):
                raise ConfigError(f(key), f'expected a number in [{lo}, {hi}], got {v!r}')
        for key in ('lr', 'weight_decay', 'grad_clip'):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (key == 'lr' and v == 0):
                raise ConfigError(f(key), f'expected a number {"> 0" if key == "lr" else ">= 0"}, got {v!r}')
        if not isinstance(self.swap_augment, bool):
            raise ConfigError(f('swap_augment'), f'expected true or false, got {self.swap_augment!r}')
        return self


def minmax(values: Sequence[float], tasks: Sequence[int] | None = None) -> np.ndarray:
    """NAO's target scaling to [0, 1] (per task when ``tasks`` is given); constant groups -> 0.5."""
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    groups = np.zeros(len(v), dtype=np.int64) if tasks is None else np.asarray(tasks)
    for g in np.unique(groups):
        idx = groups == g
        lo, hi = v[idx].min(), v[idx].max()
        out[idx] = 0.5 if hi - lo < 1e-12 else (v[idx] - lo) / (hi - lo)
    return out


# --------------------------------------------------------------------------- modules

def _normalize(h: torch.Tensor) -> torch.Tensor:
    return F.normalize(h, p=2, dim=-1)


def pool(outputs: torch.Tensor) -> torch.Tensor:
    """Architecture code of per-step outputs: re-normalise per step, mean-pool, normalise."""
    return _normalize(_normalize(outputs).mean(dim=1))


class Encoder(nn.Module):
    """Token embeddings, ``group`` consecutive ones concatenated, one-layer LSTM; returns
    (per-step L2-normalised outputs ``(N, seq_len/group, hidden)``, code ``(N, hidden)``)."""

    def __init__(self, vocab_size: int, seq_len: int, embedding_size: int = 32, group: int = 3,
                 hidden_size: int = 96, dropout: float = 0.1):
        super().__init__()
        if seq_len % group:
            raise ConfigError('strategy_args.group', f'must divide the sequence length {seq_len}, got {group}')
        self.group = group
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embedding_size * group, hidden_size, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, L = tokens.shape
        x = self.embedding(tokens).reshape(n, L // self.group, -1)
        out, _ = self.lstm(self.dropout(x))
        out = _normalize(out)
        return out, pool(out)


class MLPPredictor(nn.Module):
    """``layers`` × (dense ``hidden`` + ReLU + dropout), then dense → sigmoid. Ignores ``task``."""

    def __init__(self, in_size: int, layers: int = 0, hidden: int = 200, dropout: float = 0.1):
        super().__init__()
        mods: list[nn.Module] = []
        c = in_size
        for _ in range(layers):
            mods += [nn.Linear(c, hidden), nn.ReLU(), nn.Dropout(dropout)]
            c = hidden
        mods.append(nn.Linear(c, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, code: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.net(code)).squeeze(-1)


class Decoder(nn.Module):
    """Attention LSTM decoder: initial state = the code, Luong attention over the encoder outputs."""

    def __init__(self, vocab_size: int, seq_len: int, hidden_size: int = 96, dropout: float = 0.1,
                 masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(hidden_size, hidden_size, batch_first=True)
        self.combine = nn.Linear(2 * hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, vocab_size)
        static, size_given_type, is_size = masks if masks is not None else (
            torch.ones(seq_len, vocab_size, dtype=torch.bool), torch.ones(vocab_size, vocab_size, dtype=torch.bool),
            torch.zeros(seq_len, dtype=torch.bool))
        self.register_buffer('static_mask', static, persistent=False)
        self.register_buffer('size_mask', size_given_type, persistent=False)
        self.register_buffer('is_size', is_size, persistent=False)

    def _attend(self, h: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        # h (N, T, H), enc (N, S, H) -> logits (N, T, V)
        attn = torch.softmax(torch.bmm(h, enc.transpose(1, 2)), dim=-1)
        ctx = torch.bmm(attn, enc)
        return self.out(torch.tanh(self.combine(torch.cat([ctx, h], dim=-1))))

    def _state(self, code: torch.Tensor):
        s = code.unsqueeze(0).contiguous()
        return s, s

    def forward(self, targets: torch.Tensor, enc: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Teacher-forced log-probabilities ``(N, L, V)`` of ``targets``."""
        sos = torch.zeros_like(targets[:, :1])
        inputs = torch.cat([sos, targets[:, :-1]], dim=1)
        h, _ = self.lstm(self.dropout(self.embedding(inputs)), self._state(code))
        return F.log_softmax(self._attend(h, enc), dim=-1)

    @torch.no_grad()
    def decode(self, enc: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Greedy decoding constrained to valid cells: ``(N, L)`` tokens."""
        n = enc.shape[0]
        tok = torch.zeros(n, 1, dtype=torch.long, device=enc.device)
        state = self._state(code)
        out = []
        for t in range(self.seq_len):
            h, state = self.lstm(self.dropout(self.embedding(tok)), state)
            logits = self._attend(h, enc)[:, 0]
            mask = self.static_mask[t].expand(n, -1)
            if self.is_size[t]:
                mask = mask & self.size_mask[tok[:, 0]]
            tok = logits.masked_fill(~mask, float('-inf')).argmax(-1, keepdim=True)
            out.append(tok)
        return torch.cat(out, dim=1)


class NAOModel(nn.Module):
    """Encoder + predictor + decoder."""

    def __init__(self, encoder: Encoder, predictor: nn.Module, decoder: Decoder):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.decoder = decoder

    def loss(self, seqs: torch.Tensor, targets: torch.Tensor, tasks: torch.Tensor | None, trade_off: float):
        enc, code = self.encoder(seqs)
        pred = self.predictor(code, tasks)
        mse = F.mse_loss(pred, targets)
        logp = self.decoder(seqs, enc, code)
        nll = F.nll_loss(logp.reshape(-1, logp.shape[-1]), seqs.reshape(-1))
        loss = trade_off * mse + (1 - trade_off) * nll
        penalty = getattr(self.predictor, 'penalty', None)  # a predictor's own regulariser (XferNAS residuals)
        if penalty is not None:
            loss = loss + penalty()
        return loss, mse, nll


# --------------------------------------------------------------------------- controller

def _to_b64(obj: Any) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return base64.b64encode(buf.getvalue()).decode('ascii')


def _from_b64(text: str) -> Any:
    return torch.load(io.BytesIO(base64.b64decode(text)), map_location='cpu', weights_only=False)


class NAOController:
    """The NAO model with its optimiser, trained and used on CPU in the strategy process.

    Args:
        grammar: the space's token grammar (``vocab_size``, ``seq_len``, ``decode_masks()``,
            ``swap_branches(seq, rng)``).
        seed: seeds the weight initialisation.
        predictor: ``None`` (NAO's :class:`MLPPredictor`), an ``nn.Module`` following the predictor
            protocol, or a callable ``hidden_size -> nn.Module``.
        **config: :class:`NAOConfig` fields.
    """

    def __init__(self, grammar: Any, seed: int = 0, predictor: nn.Module | Callable[[int], nn.Module] | None = None,
                 config: NAOConfig | None = None, **config_kw: Any):
        self.grammar = grammar
        self.config = config if config is not None else NAOConfig.from_kwargs(**config_kw)
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = Encoder(grammar.vocab_size, grammar.seq_len, cfg.embedding_size, cfg.group,
                              cfg.hidden_size, cfg.dropout)
            if predictor is None:
                predictor = MLPPredictor(cfg.hidden_size, cfg.mlp_layers, cfg.mlp_hidden, cfg.dropout)
            elif not isinstance(predictor, nn.Module):
                predictor = predictor(cfg.hidden_size)
            decoder = Decoder(grammar.vocab_size, grammar.seq_len, cfg.hidden_size, cfg.dropout,
                              grammar.decode_masks())
            self.model = NAOModel(encoder, predictor, decoder)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.trained_epochs = 0

    # ---- training
    def fit(self, seqs: Sequence[Sequence[int]], targets: Sequence[float], tasks: Sequence[int] | None = None,
            epochs: int | None = None, seed: int = 0, log_every: int = 0) -> list[dict]:
        """Train on (sequence, scaled target[, task]) triples; returns per-epoch mean losses."""
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        if not len(seqs) or epochs <= 0:
            return []
        np_rng = np.random.Generator(np.random.PCG64(seed))
        y_all = torch.tensor(np.asarray(targets, dtype=np.float32))
        t_all = None if tasks is None else torch.tensor(np.asarray(tasks, dtype=np.int64))
        history = []
        model = self.model
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for epoch in range(epochs):
                order = np_rng.permutation(len(seqs))
                sums = np.zeros(3)
                for start in range(0, len(order), cfg.batch_size):
                    idx = order[start:start + cfg.batch_size]
                    batch = [seqs[i] for i in idx]
                    if cfg.swap_augment:
                        batch = [self.grammar.swap_branches(s, np_rng) for s in batch]
                    x = torch.tensor(batch, dtype=torch.long)
                    ti = torch.as_tensor(idx)
                    loss, mse, nll = model.loss(x, y_all[ti], None if t_all is None else t_all[ti], cfg.trade_off)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    sums += np.array([loss.item(), mse.item(), nll.item()]) * len(idx)
                rec = dict(zip(('loss', 'mse', 'nll'), (sums / len(seqs)).tolist()))
                history.append(rec)
                self.trained_epochs += 1
                if log_every and ((epoch + 1) % log_every == 0 or epoch + 1 == epochs):
                    _logger.info('NAO controller epoch %d/%d: loss %.4f mse %.4f nll %.4f',
                                 epoch + 1, epochs, rec['loss'], rec['mse'], rec['nll'])
        model.eval()
        return history

    # ---- inference
    def _tensor(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        return torch.tensor([list(s) for s in seqs], dtype=torch.long)

    def _task(self, task: int | None, n: int) -> torch.Tensor | None:
        return None if task is None else torch.full((n,), int(task), dtype=torch.long)

    @torch.no_grad()
    def predict(self, seqs: Sequence[Sequence[int]], task: int | None = None) -> np.ndarray:
        if not len(seqs):
            return np.zeros(0)
        self.model.eval()
        _, code = self.model.encoder(self._tensor(seqs))
        return self.model.predictor(code, self._task(task, len(seqs))).double().numpy()

    @torch.no_grad()
    def reconstruct(self, seqs: Sequence[Sequence[int]]) -> list[list[int]]:
        self.model.eval()
        enc, code = self.model.encoder(self._tensor(seqs))
        return self.model.decoder.decode(enc, code).tolist()

    @torch.no_grad()
    def decode_outputs(self, enc: torch.Tensor) -> list[list[int]]:
        """Decode per-step encoder outputs ``(N, steps, hidden)`` (re-normalised and pooled here)."""
        self.model.eval()
        enc = _normalize(enc)
        return self.model.decoder.decode(enc, pool(enc)).tolist()

    def latent_gradient(self, seqs: Sequence[Sequence[int]], task: int | None = None):
        """(per-step encoder outputs, d predictor / d outputs, predictions) of ``seqs``."""
        self.model.eval()
        with torch.no_grad():
            enc, _ = self.model.encoder(self._tensor(seqs))
        enc = enc.detach().requires_grad_(True)
        pred = self.model.predictor(pool(enc), self._task(task, len(seqs)))
        (grad,) = torch.autograd.grad(pred.sum(), enc)
        return enc.detach(), grad.detach(), pred.detach()

    #: first λ of the latent step (NAO: 1; XferNAS phase 1 starts at η)
    lambda_start: float = 1

    def generate(self, seed_seqs: Sequence[Sequence[int]], n_new: int, is_new: Callable[[list[int]], bool],
                 task: int | None = None, max_lambda: int | None = None) -> list[dict]:
        """NAO's search step: move the seeds' codes uphill with growing λ until ``n_new`` new
        sequences decode. Returns dicts ``seq, parent`` (index into ``seed_seqs``), ``lam``,
        ``pred_before`` (seed's prediction), ``pred_after`` (prediction at the moved code)."""
        max_lambda = self.config.max_lambda if max_lambda is None else max_lambda
        if not len(seed_seqs) or n_new <= 0:
            return []
        enc, grad, pred = self.latent_gradient(seed_seqs, task)
        found: list[dict] = []
        for k in range(max_lambda):  # λ = start, start + 1, …: max_lambda tries (NAO: 1 … max_lambda)
            lam = k + 1 if self.lambda_start == 1 else self.lambda_start + k
            moved = _normalize(enc + lam * grad)
            with torch.no_grad():
                after = self.model.predictor(pool(moved), self._task(task, len(seed_seqs)))
            for i, seq in enumerate(self.decode_outputs(moved)):
                if is_new(seq):
                    found.append({'seq': seq, 'parent': i, 'lam': lam, 'pred_before': float(pred[i]),
                                  'pred_after': float(after[i])})
                    if len(found) >= n_new:
                        return found
        return found

    # ---- state
    def state_dict(self) -> dict:
        return {'config': asdict(self.config), 'trained_epochs': self.trained_epochs,
                'weights': _to_b64({'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict()})}

    def load_state_dict(self, state: dict) -> None:
        blob = _from_b64(state['weights'])
        self.model.load_state_dict(blob['model'])
        self.optimizer.load_state_dict(blob['optimizer'])
        self.trained_epochs = int(state.get('trained_epochs', 0))
