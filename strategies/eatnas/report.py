"""EAT-NAS's report section: the population per cycle (paper Fig. 4) and the retraining table.

- For an ``eatnas`` search: mean accuracy, std and population quality Q per cycle from the strategy
  state in the knowledge store, next to every other ``eatnas`` search of the same task (same space,
  dataset, their arguments and the same training settings) in the store — the transfer run and its
  from-scratch baseline — with, for each pair, the number of trials transfer needed to reach the
  best population mean the other reached. Plot ``eatnas_cycles.png`` (mean accuracy and Q over
  trials, one line per search), and ``acc_vs_mult_adds.png`` (Pareto view) when the search's
  sub-objective is ``mult_adds``/``flops``.
- For a retraining experiment (``fixed`` over ``mbv2_blocks`` with ``test_acc``, as written by
  ``nni-xfer eatnas retrain``): the networks by test accuracy, each with the search trial it came
  from; the first is the basic model (``seed_from: {experiment: <this id>}``).
"""
from __future__ import annotations

from pathlib import Path

from nni_xfer.registry import REPORT_SECTIONS
from nni_xfer.report import fixed, format_table, num, pareto_front, si, trial_name
from nni_xfer.store import Evaluation, KnowledgeStore, arch_key

CYCLES_PLOT = 'eatnas_cycles.png'
PARETO_PLOT = 'acc_vs_mult_adds.png'
MAX_ROWS = 25          # per-cycle table: at most this many rows (evenly spaced, the last and best-Q kept)
MAX_PEERS = 6          # searches of the same task drawn together


def _task_key(config: dict | None) -> tuple | None:
    if not isinstance(config, dict):
        return None
    import json
    return (config.get('space'), json.dumps(config.get('space_args') or {}, sort_keys=True),
            config.get('dataset'), json.dumps(config.get('dataset_args') or {}, sort_keys=True),
            config.get('evaluator'), json.dumps(config.get('evaluator_args') or {}, sort_keys=True))


def _seed_of(config: dict | None) -> dict | None:
    return ((config or {}).get('strategy_args') or {}).get('seed_from')


def _label(exp_id: str, config: dict | None) -> str:
    seed = _seed_of(config)
    if seed is None:
        return f'{exp_id} (scratch)'
    src = seed.get('experiment') if isinstance(seed, dict) else None
    return f'{exp_id} (transfer{" from " + src if src else ""})'


def trials_to_reach(cycles: list[dict], level: float) -> int | None:
    """Trials (initial population included) until a cycle's mean accuracy first reaches ``level``."""
    for c in cycles:
        if c['mean_acc'] >= level:
            return int(c['trials']) if 'trials' in c else None
    return None


def cycle_trials(cycles: list[dict], population: int) -> list[dict]:
    """Cycles with ``trials``: the number of finished trials when the cycle closed (P for cycle 0)."""
    return [{**c, 'trials': population + c['cycle']} for c in cycles]


def _population_size(state: dict) -> int:
    extra = state.get('extra') or {}
    return int(extra.get('init_done') or len(extra.get('population') or []) or 0)


def _arch_key(arch) -> str:
    """``arch_key`` with widths as floats (NNI's JSON round trip turns ``1.0`` into ``1``)."""
    if isinstance(arch, dict) and isinstance(arch.get('blocks'), list):
        arch = {**arch, 'blocks': [{**b, 'width': float(b['width'])} if isinstance(b, dict) and
                                   isinstance(b.get('width'), (int, float)) else b for b in arch['blocks']]}
    return arch_key(arch)


def _rows(cycles: list[dict]) -> list[dict]:
    if len(cycles) <= MAX_ROWS:
        return cycles
    step = (len(cycles) - 1) / (MAX_ROWS - 1)
    keep = {round(i * step) for i in range(MAX_ROWS)}
    keep.add(max(range(len(cycles)), key=lambda i: cycles[i]['Q']))
    return [cycles[i] for i in sorted(keep)]


def _figure(rows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 3.2 * rows + 1), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _plot_cycles(series: list[tuple[str, list[dict]]], path: Path) -> None:
    fig = _figure(2)
    ax1, ax2 = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2, sharex=None)
    for label, cycles in series:
        xs = [c['trials'] for c in cycles]
        ax1.plot(xs, [c['mean_acc'] for c in cycles], '-', label=label)
        ax2.plot(xs, [c['Q'] for c in cycles], '-', label=label)
    ax1.set_ylabel('population mean accuracy')
    ax2.set_ylabel('population quality Q')
    ax2.set_xlabel('trials (initial population included)')
    ax1.set_title('EAT-NAS: population per cycle')
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    ax1.legend(loc='best', fontsize='small')
    fig.tight_layout()
    fig.savefig(path, format='png')


def _plot_pareto(evs: list[Evaluation], path: Path, experiment_id: str) -> int:
    pts, names = [], []
    for ev in evs:
        f = num(ev.metric('mult_adds', None if ev.metric('flops') is None else ev.metric('flops') / 2))
        a = num(ev.metric('val_acc', ev.metric('default')))
        if f is not None and a is not None and f > 0:
            pts.append((f, a))
            names.append(trial_name(ev))
    if not pts:
        return 0
    front = pareto_front(pts)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color='tab:gray', alpha=0.7, label='trials')
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], '-o', color='tab:red', markersize=6,
            label=f'Pareto front ({len(front)})')
    ax.set_xscale('log')
    ax.set_xlabel('multiply-adds')
    ax.set_ylabel('validation accuracy')
    ax.set_title(f'{experiment_id}: accuracy vs. multiply-adds')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(loc='best', fontsize='small')
    fig.tight_layout()
    fig.savefig(path, format='png')
    return len(pts)


def _search_section(evs, experiment_id, db: KnowledgeStore, out_dir, plots) -> list[str]:
    state = db.strategy_state(experiment_id) or {}
    cycles = (state.get('extra') or {}).get('cycles') or []
    if not cycles:
        return []
    configs = {e['experiment_id']: e.get('config') for e in db.experiments() if e.get('strategy') == 'eatnas'}
    config = configs.get(experiment_id)
    cycles = cycle_trials(cycles, _population_size(state))
    best_q = max(cycles, key=lambda c: c['Q'])
    lines = [f'EAT-NAS population per cycle of {_label(experiment_id, config)}: {len(cycles)} cycles '
             f'(cycle 0 = the initial population), best Q {best_q["Q"]:.4f} at cycle {best_q["cycle"]}']
    table = [[str(c['cycle']), str(c['trials']), str(c['trial']), fixed(c['mean_acc']), fixed(c['std_acc']),
              fixed(c['Q']), fixed(c['best_score']), si(c.get('mean_sub'))] for c in _rows(cycles)]
    lines += format_table('', table, ['cycle', 'trials', 'trial', 'mean_acc', 'std_acc', 'Q', 'best_score',
                                      'mean_sub'], {'cycle', 'trials', 'trial', 'mean_acc', 'std_acc', 'Q',
                                                    'best_score', 'mean_sub'})[1:]
    # other searches of the same task: transfer vs. scratch (paper Fig. 4)
    series = [(_label(experiment_id, config), cycles)]
    key = _task_key(config)
    if key is not None:
        for other, cfg in configs.items():
            if other == experiment_id or _task_key(cfg) != key or len(series) >= MAX_PEERS:
                continue
            st = db.strategy_state(other) or {}
            oc = (st.get('extra') or {}).get('cycles') or []
            if oc:
                series.append((_label(other, cfg), cycle_trials(oc, _population_size(st))))
    if len(series) > 1:
        lines.append(f'searches of the same task in the store ({len(series)}):')
        for label, cs in series:
            best_mean = max(c['mean_acc'] for c in cs)
            lines.append(f'  {label}: {len(cs)} cycles, {cs[-1]["trials"]} trials; mean acc initial '
                         f'{cs[0]["mean_acc"]:.4f}, best {best_mean:.4f}, final {cs[-1]["mean_acc"]:.4f}; '
                         f'best Q {max(c["Q"] for c in cs):.4f}')
        for label, cs in series:
            for olabel, ocs in series:
                if olabel == label:
                    continue
                level = max(c['mean_acc'] for c in ocs)
                n = trials_to_reach(cs, level)
                lines.append(f'  {label} reaches the best mean of {olabel} ({level:.4f}) '
                             + (f'after {n} trials' if n is not None else 'never'))
    if out_dir is not None:
        path = Path(out_dir) / CYCLES_PLOT
        _plot_cycles(series, path)
        lines.append(f'plot: {CYCLES_PLOT} (mean accuracy and Q per cycle, {len(series)} search'
                     f'{"es" if len(series) > 1 else ""})')
        if plots is not None:
            plots.append(path)
        sub = ((config or {}).get('strategy_args') or {}).get('sub_objective')
        if sub in ('mult_adds', 'flops'):
            n = _plot_pareto(evs, Path(out_dir) / PARETO_PLOT, experiment_id)
            if n:
                lines.append(f'plot: {PARETO_PLOT} ({n} trials)')
                if plots is not None:
                    plots.append(Path(out_dir) / PARETO_PLOT)
    return lines


def _retrain_section(evs, experiment_id, db: KnowledgeStore) -> list[str]:
    rows = [e for e in evs if num(e.metric('test_acc')) is not None]
    if not rows:
        return []
    searched: dict[str, Evaluation] = {}
    for e in db.evaluations(space='mbv2_blocks', status='SUCCEEDED'):
        if e.strategy == 'eatnas':
            searched[_arch_key(e.architecture)] = e   # the latest search trial of that architecture
    rows.sort(key=lambda e: (-num(e.metric('test_acc')), e.proposal_id))
    table = []
    for rank, e in enumerate(rows, 1):
        src = searched.get(_arch_key(e.architecture))
        table.append([str(rank), trial_name(e), fixed(e.metric('test_acc')), si(e.metric('params')),
                      si(None if e.metric('flops') is None else e.metric('flops') / 2),
                      '-' if src is None else f'{src.experiment_id}:{trial_name(src)}',   # as in lineage.png
                      '-' if src is None else fixed(src.metric('default'))])
    header = (f'EAT-NAS retraining of {experiment_id}: basic model = {trial_name(rows[0])} (test_acc '
              f'{num(rows[0].metric("test_acc")):.4f}); seed a transfer with seed_from: {{experiment: '
              f'{experiment_id}}}')
    return format_table(header, table, ['rank', 'trial', 'test_acc', 'params', 'mult_adds', 'search trial',
                                        'search acc'], {'rank', 'test_acc', 'params', 'mult_adds', 'search acc'})


@REPORT_SECTIONS.register('eatnas', description='EAT-NAS: population mean accuracy / Q per cycle (transfer vs. '
                                                'scratch) and the retraining table')
def eatnas_section(evs: list[Evaluation], experiment_id: str | None = None, store: KnowledgeStore | None = None,
                   out_dir: str | Path | None = None, plots: list | None = None) -> list[str]:
    if not evs or experiment_id is None or evs[0].space != 'mbv2_blocks':
        return []
    own = store is None
    db = KnowledgeStore.resolve(store, readonly=True)
    try:
        if evs[0].strategy == 'eatnas':
            return _search_section(evs, experiment_id, db, out_dir, plots)
        if evs[0].strategy == 'fixed':
            return _retrain_section(evs, experiment_id, db)
        return []
    finally:
        if own:
            db.close()
