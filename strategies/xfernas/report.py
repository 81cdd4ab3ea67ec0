"""XferNAS's report section: which proposals came from phase 1 (source seeds) and phase 2 (target seeds)."""
from __future__ import annotations

from nni_xfer.registry import REPORT_SECTIONS
from nni_xfer.report import trial_name
from nni_xfer.store import Evaluation, KnowledgeStore

PHASE_NAMES = {0: 'NAO seed set', 1: 'phase 1 (source seeds)', 2: 'phase 2 (target seeds)'}


def phases_of(state: dict | None) -> dict[int, dict]:
    """proposal id -> proposal meta (``phase``, ``role``, ``lambda``) from an xfernas strategy state."""
    out = {}
    for h in ((state or {}).get('history') or []):
        out[int(h['id'])] = h.get('meta') or {}
    for pid, p in ((state or {}).get('pending') or {}).items():
        out[int(pid)] = p.get('meta') or {}
    return out


@REPORT_SECTIONS.register('xfernas', description='XferNAS: proposals of phase 1 (source seeds) and phase 2')
def xfernas_phases(evs: list[Evaluation], experiment_id: str | None = None,
                   store: KnowledgeStore | None = None) -> list[str]:
    """Per phase: trials, best ``default``, and each trial's phase and step size λ.

    The phase of a proposal is in the strategy's state in the knowledge store (``store``; the
    default store when the report does not pass one).
    """
    evs = [e for e in evs if e.strategy == 'xfernas']
    if not evs or experiment_id is None:
        return []
    own = store is None
    db = KnowledgeStore.resolve(store, readonly=True)
    try:
        meta = phases_of(db.strategy_state(experiment_id))
    finally:
        if own:
            db.close()
    if not meta:
        return []
    lines = [f'XferNAS phases of {experiment_id}:']
    by_phase: dict = {}
    for e in evs:
        m = meta.get(int(e.proposal_id), {})
        by_phase.setdefault(m.get('phase', 0 if m.get('role') == 'seed' else None), []).append((e, m))
    for phase in sorted(by_phase, key=lambda p: (p is None, p)):
        rows = by_phase[phase]
        best = max((e.metric('default') for e, _ in rows if e.metric('default') is not None), default=None)
        name = PHASE_NAMES.get(phase, 'other')
        lines.append(f'  {name}: {len(rows)} trials, best default '
                     f"{'n/a' if best is None else f'{best:.4f}'}")
    # trials by NNI trial id, as in the report's table and lineage plot; the proposal number beside it
    lines.append('  trial     proposal  phase  role         lambda  default')
    for e in sorted(evs, key=lambda e: e.proposal_id):
        m = meta.get(int(e.proposal_id), {})
        lam = m.get('lambda')
        lines.append(f"  {trial_name(e):8}  {e.proposal_id:8d}  {str(m.get('phase', '-')):5}  "
                     f"{str(m.get('role', '-')):11}  {'-' if lam is None else f'{lam:6.1f}':>6}  "
                     f"{e.metric('default', float('nan')):.4f}")
    return lines
