import io
import math

import pytest
import torch

from nni_xfer.search_spaces.eas_densenet import (DenseNetEASOps, apply_densenet_deeper, apply_densenet_wider,
                                                 densenet_layout, densenet_positions, densenet_tokens)
from nni_xfer.search_spaces.eas_plain_cnn import PlainEASOps, apply_deeper, apply_wider, block_layout
from nni_xfer.strategies.eas.controller import (Controller, DeeperActor, DeeperDecision, Encoder, WiderActor, encode,
                                                reward)
from nni_xfer.strategy import SpaceInfo

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures('one_torch_thread')]

CONV = [16, 32, 64]
FC = [64, 128]
KERN = [1, 3, 5]
START = ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'conv-64-5', 'pool', 'fc-64']


def grammar():
    """The plain-CNN space's EAS operators: the controller's token grammar."""
    return PlainEASOps(SpaceInfo('eas_plain_cnn', {}, {}, extra={
        'start': {'layers': START}, 'conv_widths': CONV, 'kernels': KERN, 'fc_units': FC}))


def vocab():
    return Controller(grammar()).vocab


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ vocabulary / encoding

@pytest.mark.timeout(60)
def test_vocab_order_and_encoding():
    v = vocab()
    assert v['PAD'] == 0
    assert list(v)[1:4] == ['conv-16-1', 'conv-16-3', 'conv-16-5']
    assert v['conv-64-5'] == 9 and v['fc-64'] == 10 and v['fc-128'] == 11 and v['pool'] == 12
    assert sorted(v.values()) == list(range(len(v)))
    ids, n = encode(['conv-16-3', 'pool', 'fc-128'], v, 50)
    assert n == 3 and ids.dtype == torch.long and ids.shape == (50,)
    assert ids[:3].tolist() == [2, 12, 11] and ids[3:].eq(0).all()
    ids, n = encode(['pool'], v, max_len=4)
    assert ids.tolist() == [12, 0, 0, 0] and n == 1
    with pytest.raises(ValueError):
        encode(['conv-17-3'], v, 50)
    with pytest.raises(ValueError):
        encode(['pool'] * 5, v, max_len=4)


@pytest.mark.timeout(60)
def test_encoder_shapes_padding_and_init():
    torch.manual_seed(0)
    v = vocab()
    enc = Encoder(len(v))
    w = enc.embedding.weight
    assert w.shape == (len(v), 16) and w.abs().max() <= math.sqrt(3) + 1e-6
    ids, n = encode(START, v, 50)
    out, (h, c) = enc(ids, n)
    assert out.shape == (50, 100) and h.shape == (100,) and c.shape == (100,)
    assert out[n:].eq(0).all() and out[:n].abs().sum() > 0
    # forward final h == forward output at the last real token; backward final h == backward output at 0
    assert torch.allclose(h[:50], out[n - 1, :50]) and torch.allclose(h[50:], out[0, 50:])
    # padding content is never read
    ids2 = ids.clone()
    ids2[n:] = 5
    out2, (h2, _) = enc(ids2, n)
    assert torch.equal(out[:n], out2[:n]) and torch.equal(h, h2)


# ------------------------------------------------------------------ wider actor

@pytest.mark.timeout(60)
def test_wider_mask_excludes_pool_pad_and_maxed():
    toks = ['conv-16-3', 'pool', 'conv-64-3', 'pool', 'fc-64', 'fc-128']
    m = Controller(grammar(), max_len=10).wider_mask(toks)
    assert m.tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0, 0]


@pytest.mark.timeout(60)
def test_wider_log_prob_and_entropy_use_only_masked_positions():
    torch.manual_seed(0)
    actor = WiderActor()
    out = torch.randn(6, 100)
    mask = torch.tensor([1., 0, 1, 0, 0, 0])
    d = torch.tensor([1, 1, 0, 1, 0, 0])
    p = torch.sigmoid(actor.linear(out).squeeze(-1)).detach().tolist()
    expect = math.log(p[0]) + math.log(1 - p[2])
    assert actor.log_prob(out, mask, d).item() == pytest.approx(expect, abs=1e-5)
    h = lambda q: -(q * math.log(q) + (1 - q) * math.log(1 - q))
    assert actor.entropy(out, mask).item() == pytest.approx(h(p[0]) + h(p[2]), abs=1e-5)
    # sampled decisions are 0 wherever the mask is 0
    for s in range(20):
        dec = actor.sample(out, mask, gen(s))
        assert dec[mask == 0].eq(0).all()


@pytest.mark.timeout(60)
def test_controller_wider_never_widens_masked_layers():
    ctl = Controller(grammar(), seed=0)
    toks = ['conv-64-3', 'pool', 'conv-16-3', 'pool', 'fc-128', 'fc-64']
    g = gen(3)
    seen = set()
    for _ in range(30):
        d = ctl.wider(toks, g)
        assert len(d) == len(toks)
        assert d[0] == 0 and d[1] == 0 and d[3] == 0 and d[4] == 0
        seen.update(i for i, x in enumerate(d) if x)
    assert seen == {2, 5}


# ------------------------------------------------------------------ deeper actor

@pytest.mark.timeout(60)
def test_block_layout():
    toks = ['conv-16-3', 'conv-16-3', 'pool', 'conv-32-3', 'pool', 'pool', 'fc-64', 'fc-128']
    assert block_layout(toks) == [[0, 1], [3], [], [], [6, 7]]
    # no FC layer: the fc block offers the global pool (a first FC goes right after it)
    assert block_layout(['conv-16-3', 'pool']) == [[0], [], [], [], [1]]
    assert block_layout(toks, fc_block='paper') == [[0, 1], [3], [], [], [5, 6, 7]]
    with pytest.raises(ValueError):
        block_layout(['conv-16-3', 'pool'] * 5)
    assert block_layout(['conv-16-3', 'pool'] * 5, n_blocks=6)[-1] == [9]


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(100, generator=g), torch.randn(100, generator=g)


@pytest.mark.timeout(60)
def test_deeper_layer_index_masked_and_renormalised():
    torch.manual_seed(0)
    actor = DeeperActor(100, 16, 5, 10, KERN)
    counts = [3, 0, 1, 0, 2]
    state = _state()
    probs = actor.distributions(state, counts, DeeperDecision(0, 1, 3))
    pb, pl, pk = probs
    assert pb.shape == (5,) and pl.shape == (10,) and pk.shape == (3,)
    # empty blocks and layer indices >= the block's layer count have probability exactly 0
    assert pb[1].item() == 0.0 and pb[3].item() == 0.0
    assert (pl[3:] == 0).all() and (pl[:3] > 0).all()
    assert pl.sum().item() == pytest.approx(1.0, abs=1e-6)
    # renormalisation of the unmasked softmax over the valid entries
    h, c = actor.cell(actor.start.unsqueeze(0), (state[0].unsqueeze(0), state[1].unsqueeze(0)))
    h, c = actor.cell(actor.block_embed(torch.tensor([0])), (h, c))
    full = torch.softmax(actor.layer_head(h)[0], -1)
    assert torch.allclose(pl[:3], full[:3] / full[:3].sum(), atol=1e-6)
    # sampling never picks invalid blocks or layers
    for s in range(50):
        d = actor.sample(state, counts, gen(s))
        assert counts[d.block] > 0 and 0 <= d.layer < counts[d.block] and d.kernel in (1, 3, 5)


@pytest.mark.timeout(60)
def test_deeper_kernel_masked_out_for_fc_block():
    torch.manual_seed(0)
    actor = DeeperActor(100, 16, 5, 10, KERN)
    counts = [2, 1, 1, 1, 2]
    state = _state(1)
    # fc block (index 4): the kernel choice does not change log-prob or entropy
    lps = [actor.log_prob(state, counts, DeeperDecision(4, 1, k)).item() for k in (1, 3, 5)]
    assert lps[0] == lps[1] == lps[2]
    ents = [actor.entropy(state, counts, DeeperDecision(4, 1, k)).item() for k in (1, 3, 5)]
    assert ents[0] == ents[1] == ents[2]
    pb, pl, pk = actor.distributions(state, counts, DeeperDecision(4, 1, 3))
    assert lps[0] == pytest.approx(math.log(pb[4].item()) + math.log(pl[1].item()), abs=1e-5)
    # conv block: it does
    pb, pl, pk = actor.distributions(state, counts, DeeperDecision(0, 1, 5))
    lp = actor.log_prob(state, counts, DeeperDecision(0, 1, 5)).item()
    assert lp == pytest.approx(math.log(pb[0].item()) + math.log(pl[1].item()) + math.log(pk[2].item()), abs=1e-5)


@pytest.mark.timeout(60)
def test_teacher_forcing_reproduces_sampling_log_prob():
    torch.manual_seed(0)
    deeper = DeeperActor(100, 16, 5, 10, KERN)
    wider = WiderActor()
    state = _state(2)
    counts = [2, 3, 1, 1, 1]
    for s in range(20):
        d, lp, ent = deeper.sample(state, counts, gen(s), return_log_prob=True)
        assert abs(deeper.log_prob(state, counts, d).item() - lp.item()) < 1e-6
        assert abs(deeper.entropy(state, counts, d).item() - ent.item()) < 1e-6
    out = torch.randn(8, 100)
    mask = torch.tensor([1., 1, 0, 1, 0, 1, 1, 0])
    for s in range(5):
        d, lp, _ = wider.sample(out, mask, gen(s), return_log_prob=True)
        assert abs(wider.log_prob(out, mask, d).item() - lp.item()) < 1e-6


# ------------------------------------------------------------------ REINFORCE

@pytest.mark.timeout(60)
def test_reward_transform():
    assert reward(0.5) == pytest.approx(1.0)
    assert reward(0.0) == 0.0
    assert torch.allclose(reward([0.5, 0.0]), torch.tensor([1.0, 0.0], dtype=torch.float64))


@pytest.mark.timeout(60)
def test_baseline_update_and_advantages_hand_example(monkeypatch):
    ctl = Controller(grammar(), seed=0)
    toks = list(START)
    trajs = [[('wider', toks, [1, 0, 0, 0, 0, 0, 0, 0, 0])],
             [('wider', toks, [0, 0, 1, 0, 0, 0, 0, 0, 0])]]
    rewards = [1.0, 3.0]
    # record the advantage each network's log-prob is weighted with
    lps = {}
    orig = ctl.step_log_prob

    def spy(kind, tokens, decisions):
        lp, ent = orig(kind, tokens, decisions)
        lps[tuple(decisions)] = lp.detach()
        return lp, ent
    monkeypatch.setattr(ctl, 'step_log_prob', spy)
    stats = ctl.update(trajs, rewards)
    b1 = 0.95 * 2.0
    assert ctl.baseline == pytest.approx(b1) and stats['baseline'] == pytest.approx(1.9)
    assert stats['mean_reward'] == pytest.approx(2.0)
    assert stats['advantages'] == pytest.approx([(1.0 - 1.9) / 2, (3.0 - 1.9) / 2])
    lp_a, lp_b = lps[tuple(trajs[0][0][2])], lps[tuple(trajs[1][0][2])]
    expect = -(lp_a * -0.45 + lp_b * 0.55).item() - 1e-5 * stats['entropy']
    assert stats['loss'] == pytest.approx(expect, abs=1e-5)
    # second batch: b2 = b1 + 0.95 * (mean - b1)
    stats = ctl.update(trajs[:1], accuracies=[0.5])
    b2 = b1 + 0.95 * (1.0 - b1)
    assert ctl.baseline == pytest.approx(b2)
    assert stats['advantages'] == pytest.approx([1.0 - b2])
    with pytest.raises(ValueError):
        ctl.update(trajs, [1.0])


@pytest.mark.timeout(60)
def test_both_baseline_rules_on_a_worked_example():
    """Rewards 1 and 3 (mean 2) then 1, decay 0.95, from b = 0.
    code (authors' code):  b1 = 0 + 0.95·(2 − 0) = 1.9;      b2 = 1.9 + 0.95·(1 − 1.9) = 1.045
    paper (text's EMA):    b1 = 0.95·0 + 0.05·2 = 0.1;       b2 = 0.95·0.1 + 0.05·1 = 0.145"""
    from nni_xfer.strategies.eas.controller import update_baseline
    assert update_baseline(0.0, 2.0, 0.95, 'code') == pytest.approx(1.9)
    assert update_baseline(1.9, 1.0, 0.95, 'code') == pytest.approx(1.045)
    assert update_baseline(0.0, 2.0, 0.95, 'paper') == pytest.approx(0.1)
    assert update_baseline(0.1, 1.0, 0.95, 'paper') == pytest.approx(0.145)
    toks = list(START)
    trajs = [[('wider', toks, [1, 0, 0, 0, 0, 0, 0, 0, 0])], [('wider', toks, [0, 0, 1, 0, 0, 0, 0, 0, 0])]]
    for rule, (b1, b2) in (('code', (1.9, 1.045)), ('paper', (0.1, 0.145))):
        ctl = Controller(grammar(), seed=0, baseline_rule=rule)
        stats = ctl.update(trajs, [1.0, 3.0])
        assert ctl.baseline == pytest.approx(b1)
        assert stats['advantages'] == pytest.approx([(1.0 - b1) / 2, (3.0 - b1) / 2])
        stats = ctl.update(trajs[:1], [1.0])
        assert ctl.baseline == pytest.approx(b2) and stats['advantages'] == pytest.approx([1.0 - b2])
    assert Controller(grammar(), seed=0).baseline_rule == 'code'
    with pytest.raises(ValueError):
        Controller(grammar(), seed=0, baseline_rule='ema')


@pytest.mark.timeout(60)
def test_gradient_sign_increases_preferred_widen_probability():
    ctl = Controller(grammar(), seed=0)
    toks = list(START)
    g = gen(0)
    p0 = ctl.wider_probs(toks)[0].item()
    for _ in range(8):
        trajs, accs = [], []
        for _ in range(10):
            d = ctl.wider(toks, g)
            trajs.append([('wider', toks, d)])
            accs.append(0.9 if d[0] else 0.5)
        ctl.update(trajs, accuracies=accs)
    p1 = ctl.wider_probs(toks)[0].item()
    assert p1 > p0 + 0.05


def rewarded_block_prob(ctl, toks, block, probe, seed=1):
    """P(deeper picks ``block``) before and after 8 REINFORCE updates that reward that block
    (reward 2.0 vs 0.5, 10 networks each); ``probe`` is any decision for the teacher-forced pass."""
    def prob():
        with torch.no_grad():
            _, st = ctl.encode(toks)
            return ctl.deeper_actor.distributions(st, ctl.layer_counts(toks), probe)[0][block].item()
    before = prob()
    g = gen(seed)
    for _ in range(8):
        trajs, rs = [], []
        for _ in range(10):
            d = ctl.deeper(toks, g)
            trajs.append([('deeper', toks, d)])
            rs.append(2.0 if d.block == block else 0.5)
        ctl.update(trajs, rs)
    return before, prob()


@pytest.mark.timeout(60)
def test_deeper_update_moves_towards_rewarded_block():
    before, after = rewarded_block_prob(Controller(grammar(), seed=0), list(START), 4, DeeperDecision(4, 0, 3))
    assert after > before


def _rollout(ctl, g, n=3):
    """Decisions of a few wider-then-deeper episodes."""
    out = []
    for _ in range(n):
        toks = list(START)
        for _ in range(2):
            d = ctl.wider(toks, g)
            out.append(tuple(d))
            toks = apply_wider(toks, d, CONV, FC)
        for _ in range(2):
            d = ctl.deeper(toks, g)
            out.append(tuple(d))
            toks = apply_deeper(toks, d)
        out.append(tuple(toks))
    return out


@pytest.mark.timeout(60)
def test_same_seed_same_decisions():
    a = _rollout(Controller(grammar(), seed=7), gen(11))
    b = _rollout(Controller(grammar(), seed=7), gen(11))
    assert a == b
    # a different init changes the policy; a different generator changes the draws
    pa = Controller(grammar(), seed=7).wider_probs(START)
    pc = Controller(grammar(), seed=8).wider_probs(START)
    assert torch.equal(pa, Controller(grammar(), seed=7).wider_probs(START)) and not torch.allclose(pa, pc)
    assert a != _rollout(Controller(grammar(), seed=7), gen(12))


def _trajectories(ctl, g):
    trajs, rs = [], []
    for i in range(4):
        toks = list(START)
        traj = []
        d = ctl.wider(toks, g)
        traj.append(('wider', toks, d))
        toks = apply_wider(toks, d, CONV, FC)
        dd = ctl.deeper(toks, g)
        traj.append(('deeper', toks, dd))
        trajs.append(traj)
        rs.append(reward(0.5 + 0.1 * i))
    return trajs, rs


@pytest.mark.timeout(60)
def test_state_dict_round_trip_gives_identical_decisions():
    a = Controller(grammar(), seed=0)
    trajs, rs = _trajectories(a, gen(0))
    a.update(trajs, rs)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    assert set(state) >= {'model', 'optimizer', 'baseline'}
    b = Controller(grammar(), seed=123)
    assert not torch.allclose(a.wider_probs(START), b.wider_probs(START))
    b.load_state_dict(state)
    assert torch.equal(a.wider_probs(START), b.wider_probs(START))
    assert b.baseline == a.baseline
    assert _rollout(a, gen(5)) == _rollout(b, gen(5))
    # optimizer state came along too: one more identical update keeps them identical
    trajs, rs = _trajectories(a, gen(9))
    sa, sb = a.update(trajs, rs), b.update(trajs, rs)
    assert sa['loss'] == sb['loss'] and sa['baseline'] == sb['baseline']
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert _rollout(a, gen(6)) == _rollout(b, gen(6))


# ------------------------------------------------------------------ applying decisions

@pytest.mark.timeout(60)
def test_apply_wider_hand_cases():
    toks = ['conv-16-3', 'pool', 'conv-32-5', 'pool', 'fc-64']
    assert apply_wider(toks, [1, 0, 1, 0, 1], CONV, FC) == ['conv-32-3', 'pool', 'conv-64-5', 'pool', 'fc-128']
    assert apply_wider(toks, [0, 0, 0, 0, 0], CONV, FC) == toks
    # padded decisions are fine; only the first len(tokens) are read
    assert apply_wider(toks, [0, 0, 1, 0, 0, 1, 1], CONV, FC)[2] == 'conv-64-5'
    with pytest.raises(ValueError):
        apply_wider(toks, [0, 1, 0, 0, 0], CONV, FC)          # pool
    with pytest.raises(ValueError):
        apply_wider(['conv-64-3', 'pool'], [1, 0], CONV, FC)  # already max


@pytest.mark.timeout(60)
def test_apply_deeper_hand_cases():
    toks = ['conv-16-3', 'conv-32-5', 'pool', 'conv-64-3', 'pool', 'fc-128']
    assert apply_deeper(toks, DeeperDecision(0, 0, 5)) == \
        ['conv-16-3', 'conv-16-5', 'conv-32-5', 'pool', 'conv-64-3', 'pool', 'fc-128']
    assert apply_deeper(toks, DeeperDecision(0, 1, 1)) == \
        ['conv-16-3', 'conv-32-5', 'conv-32-1', 'pool', 'conv-64-3', 'pool', 'fc-128']
    assert apply_deeper(toks, (1, 0, 3)) == \
        ['conv-16-3', 'conv-32-5', 'pool', 'conv-64-3', 'conv-64-3', 'pool', 'fc-128']
    assert apply_deeper(toks, DeeperDecision(4, 0, 5)) == toks + ['fc-128']
    with pytest.raises(ValueError):
        apply_deeper(toks, DeeperDecision(2, 0, 3))           # empty block
    with pytest.raises(ValueError):
        apply_deeper(toks, DeeperDecision(1, 1, 3))           # layer index out of range


# ------------------------------------------------------------------ DenseNet variant (docs/fidelity.md, EAS)

GROWTHS = [4, 6, 8]
DN = {'growths': [[4, 8], [6, 4, 8], [4]], 'stem': 8, 'transitions': [8, 12]}
DN_TOKENS = ['g4', 'g8', 't', 'g6', 'g4', 'g8', 't', 'g4']


def dgrammar():
    """The DenseNet space's EAS operators: the controller's token grammar."""
    return DenseNetEASOps(SpaceInfo('eas_densenet', {}, {}, extra={'start': DN, 'growth_rates': GROWTHS}))


@pytest.mark.timeout(60)
def test_densenet_vocab_and_tokens():
    ctl = Controller(dgrammar(), seed=0)
    v = ctl.vocab
    assert v == {'PAD': 0, 'g4': 1, 'g6': 2, 'g8': 3, 't': 4}
    assert densenet_tokens(DN) == DN_TOKENS            # stem has no token
    assert densenet_layout(DN_TOKENS) == [[0, 1], [3, 4, 5], [7]]
    assert densenet_layout(['g4']) == [[0], [], []]
    with pytest.raises(ValueError):
        densenet_layout(['g4', 't', 'g4', 't', 'g4', 't', 'g4'])   # 4 blocks > 3
    assert densenet_positions(DN_TOKENS) == [(0, 0), (0, 1), None, (1, 0), (1, 1), (1, 2), None, (2, 0)]
    ids, n = encode(DN_TOKENS, v, max_len=64)
    assert n == 8 and ids[:8].tolist() == [1, 3, 4, 2, 1, 3, 4, 1] and ids[8:].eq(0).all()
    assert ctl.max_len == 64 and ctl.n_blocks == 3
    assert ctl.deeper_actor.kernel_head is None and ctl.deeper_actor.layer_head.out_features == 20
    plain = Controller(grammar(), seed=0)
    assert plain.max_len == 50 and plain.deeper_actor.kernel_head.out_features == 3
    assert list(plain.vocab)[:4] == ['PAD', 'conv-16-1', 'conv-16-3', 'conv-16-5']


@pytest.mark.timeout(60)
def test_densenet_wider_mask_excludes_max_growth_layers_and_transitions():
    m = Controller(dgrammar(), max_len=10).wider_mask(DN_TOKENS)
    assert m.tolist() == [1, 0, 0, 1, 1, 0, 0, 1, 0, 0]
    ctl = Controller(dgrammar(), seed=0)
    assert ctl.wider_mask(DN_TOKENS).tolist() == m.tolist() + [0] * 54
    g = gen(3)
    seen = set()
    for _ in range(30):
        d = ctl.wider(DN_TOKENS, g)
        assert len(d) == len(DN_TOKENS)
        assert all(d[i] == 0 for i in (1, 2, 5, 6))     # g8 (max growth) and transitions
        seen.update(i for i, x in enumerate(d) if x)
        apply_densenet_wider(DN_TOKENS, d, GROWTHS)     # always applicable
    assert seen == {0, 3, 4, 7}
    # a chosen layer moves up exactly one step of the growth list
    assert apply_densenet_wider(DN_TOKENS, [1, 0, 0, 1, 1, 0, 0, 0], GROWTHS) == \
        ['g6', 'g8', 't', 'g8', 'g6', 'g8', 't', 'g4']
    with pytest.raises(ValueError):
        apply_densenet_wider(DN_TOKENS, [0, 1, 0, 0, 0, 0, 0, 0], GROWTHS)   # already max
    with pytest.raises(ValueError):
        apply_densenet_wider(DN_TOKENS, [0, 0, 1, 0, 0, 0, 0, 0], GROWTHS)   # transition


@pytest.mark.timeout(60)
def test_densenet_deeper_masks_and_duplicate_insert():
    ctl = Controller(dgrammar(), seed=0)
    toks = ['g4', 'g8', 't', 'g6']                      # two blocks only: block 2 does not exist
    counts = ctl.layer_counts(toks)
    assert counts == [2, 1, 0]
    _, state = ctl.encode(toks)
    pb, pl = ctl.deeper_actor.distributions(state, counts, (0, 1))
    assert pb.shape == (3,) and pl.shape == (20,)
    assert pb[2].item() == 0.0 and (pb[:2] > 0).all()
    assert (pl[2:] == 0).all() and (pl[:2] > 0).all() and pl.sum().item() == pytest.approx(1.0, abs=1e-6)
    pb, pl = ctl.deeper_actor.distributions(state, counts, (1, 0))
    assert (pl[1:] == 0).all() and pl[0].item() == pytest.approx(1.0)
    g = gen(4)
    blocks = set()
    for _ in range(40):
        d = ctl.deeper(toks, g)
        assert d.kernel is None and counts[d.block] > 0 and 0 <= d.layer < counts[d.block]
        blocks.add(d.block)
    assert blocks == {0, 1}
    with pytest.raises(ValueError):                     # teacher forcing a masked decision
        ctl.step_log_prob('deeper', toks, (2, 0))
    # deeper = duplicate of the chosen layer right after it
    assert apply_densenet_deeper(DN_TOKENS, DeeperDecision(1, 0)) == \
        ['g4', 'g8', 't', 'g6', 'g6', 'g4', 'g8', 't', 'g4']
    assert apply_densenet_deeper(DN_TOKENS, (2, 0)) == DN_TOKENS + ['g4']
    with pytest.raises(ValueError):
        apply_densenet_deeper(toks, (2, 0))
    # positions beyond the head size (20) are never chosen
    long = ['g4'] * 25
    pb, pl = ctl.deeper_actor.distributions(ctl.encode(long)[1], ctl.layer_counts(long), (0, 0))
    assert pl.shape == (20,) and (pl > 0).all()


@pytest.mark.timeout(60)
def test_densenet_teacher_forcing_gives_sampling_log_probs():
    ctl = Controller(dgrammar(), seed=1)
    toks = list(DN_TOKENS)
    counts = ctl.layer_counts(toks)
    for s in range(10):
        with torch.no_grad():
            out, state = ctl.encode(toks)
            mask = ctl.wider_mask(toks)
            d, lp, ent = ctl.wider_actor.sample(out, mask, gen(s), return_log_prob=True)
            dd, dlp, dent = ctl.deeper_actor.sample(state, counts, gen(100 + s), return_log_prob=True)
        decisions = [int(x) for x in d[:len(toks)]]
        lp2, ent2 = ctl.step_log_prob('wider', toks, decisions)
        assert lp2.item() == pytest.approx(lp.item(), abs=1e-5) and ent2.item() == pytest.approx(ent.item(), abs=1e-5)
        for rec in (dd, tuple(dd[:2]), list(dd[:2])):   # DeeperDecision or its JSON form [block, layer]
            dlp2, dent2 = ctl.step_log_prob('deeper', toks, rec)
            assert dlp2.item() == pytest.approx(dlp.item(), abs=1e-6)
            assert dent2.item() == pytest.approx(dent.item(), abs=1e-6)
        pb, pl = ctl.deeper_actor.distributions(state, counts, dd)
        assert dlp.item() == pytest.approx(math.log(pb[dd.block].item()) + math.log(pl[dd.layer].item()), abs=1e-5)


def _dn_trajectories(ctl, g, n=4):
    trajs, rs = [], []
    for i in range(n):
        toks, traj = list(DN_TOKENS), []
        for _ in range(2):
            d = ctl.wider(toks, g)
            traj.append(('wider', toks, d))
            toks = apply_densenet_wider(toks, d, GROWTHS)
        dd = ctl.deeper(toks, g)
        traj.append(('deeper', toks, dd))
        trajs.append(traj)
        rs.append(reward(0.5 + 0.1 * i))
    return trajs, rs


def _dn_rollout(ctl, g, n=3):
    out = []
    for _ in range(n):
        toks = list(DN_TOKENS)
        for _ in range(2):
            toks = apply_densenet_wider(toks, ctl.wider(toks, g), GROWTHS)
        for _ in range(2):
            toks = apply_densenet_deeper(toks, ctl.deeper(toks, g))
        out.append(tuple(toks))
    return out


@pytest.mark.timeout(60)
def test_densenet_state_dict_round_trip_and_update():
    a = Controller(dgrammar(), seed=0)
    trajs, rs = _dn_trajectories(a, gen(0))
    stats = a.update(trajs, rs)
    assert stats['baseline'] == pytest.approx(0.95 * sum(rs) / len(rs))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = Controller(dgrammar(), seed=123)
    assert not torch.allclose(a.wider_probs(DN_TOKENS), b.wider_probs(DN_TOKENS))
    b.load_state_dict(torch.load(buf, weights_only=False))
    assert torch.equal(a.wider_probs(DN_TOKENS), b.wider_probs(DN_TOKENS)) and b.baseline == a.baseline
    assert _dn_rollout(a, gen(5)) == _dn_rollout(b, gen(5))
    trajs, rs = _dn_trajectories(a, gen(9))
    sa, sb = a.update(trajs, rs), b.update(trajs, rs)
    assert sa['loss'] == sb['loss']
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert _dn_rollout(a, gen(6)) == _dn_rollout(b, gen(6))


@pytest.mark.timeout(60)
def test_densenet_update_moves_towards_rewarded_block():
    before, after = rewarded_block_prob(Controller(dgrammar(), seed=0), list(DN_TOKENS), 2, (2, 0))
    assert after > before
