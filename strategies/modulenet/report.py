"""ModuleNet's report sections: fine-tuned searched chains vs. the original networks (paper Tables I-III)
and the trials and survivors per NSGA-II generation (``generations.png``)."""
from __future__ import annotations

from pathlib import Path

from nni_xfer.registry import REPORT_SECTIONS
from nni_xfer.report import figure, fixed, format_table, integer_ticks, maximize_of, num, save_png, si, trial_name
from nni_xfer.store import Evaluation, KnowledgeStore, arch_key

GENERATIONS_PLOT = 'generations.png'


@REPORT_SECTIONS.register('modulenet', description='fine-tuned searched chains vs. the original networks')
def modulenet_comparison(evs: list[Evaluation], experiment_id: str | None = None) -> list[str]:
    """ModuleNet's final table (paper Tables I–III): searched chains vs. the original networks.

    For ``module_chain`` evaluations that report ``test_acc`` (the fine-tuning stage): a chain
    whose positions all come from one source is that source's original network; any other chain
    is a searched one. Sorted by test accuracy.
    """
    rows = []
    for ev in evs:
        if ev.space != 'module_chain' or num(ev.metric('test_acc')) is None or not isinstance(ev.architecture, dict):
            continue
        codes = [ev.architecture[k] for k in sorted(ev.architecture, key=lambda k: int(str(k).rsplit('_', 1)[-1]))]
        kind = f'original {codes[0]}' if len(set(codes)) == 1 else 'searched'
        rows.append((num(ev.metric('test_acc')), kind, ev, '-'.join(codes)))
    if not rows:
        return []
    rows.sort(key=lambda r: (-r[0], r[2].proposal_id))
    best_orig = max((r[0] for r in rows if r[1] != 'searched'), default=None)
    best_search = max((r[0] for r in rows if r[1] == 'searched'), default=None)
    header = 'ModuleNet: fine-tuned searched chains vs. the original networks (test split)'
    if best_orig is not None and best_search is not None:
        header += (f'; best searched test error {100 * (1 - best_search):.2f}% vs best original '
                   f'{100 * (1 - best_orig):.2f}%')
    table = [[kind, trial_name(ev), fixed(100 * (1 - acc), 2), fixed(ev.metric('val_acc')), fixed(acc),
              si(ev.metric('params')), code] for acc, kind, ev, code in rows]
    return format_table(header, table, ['network', 'trial', 'test_err%', 'val_acc', 'test_acc', 'params', 'modules'],
                         {'test_err%', 'val_acc', 'test_acc', 'params'})


@REPORT_SECTIONS.register('modulenet_generations', description='ModuleNet: trials and survivors per NSGA-II '
                          'generation (generations.png)')
def generations_section(evs: list[Evaluation], experiment_id: str, store: KnowledgeStore, out_dir: Path,
                        plots: list) -> list[str]:
    """``generations.png`` for an experiment whose proposals carry a generation; nothing (and no stale
    file) otherwise."""
    path = Path(out_dir) / GENERATIONS_PLOT
    note = plot_generations(store.strategy_state(experiment_id), evs, path, experiment_id,
                            maximize_of(store, experiment_id))
    if note is None:
        if path.exists():
            path.unlink()
        return []
    plots.append(path)
    return [note]


def plot_generations(state: dict | None, evs: list[Evaluation], path: Path, experiment_id: str,
                      maximize: bool) -> str | None:
    """Trials per generation and the survivors, for a strategy whose proposals carry
    ``meta.generation`` (ModuleNet's NSGA-II). ``None`` when the strategy state has no generations."""
    history = (state or {}).get('history') or []
    gens = {h.get('id'): h['meta']['generation'] for h in history
            if isinstance(h.get('meta'), dict) and isinstance(h['meta'].get('generation'), int)}
    if not gens:
        return None
    extra = (state or {}).get('extra') or {}
    survivors = {arch_key(m['architecture']) for m in extra.get('population') or []
                 if isinstance(m, dict) and 'architecture' in m}
    log = [e for e in extra.get('log') or [] if isinstance(e, dict) and isinstance(e.get('generation'), int)]
    pts, surv = [], []
    for e in evs:
        g, v = gens.get(e.proposal_id), num(e.metric('default'))
        if g is None or v is None or e.status != 'SUCCEEDED':
            continue
        (surv if arch_key(e.architecture) in survivors else pts).append((g, v))
    fig = figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter([g for g, _ in pts], [v for _, v in pts], s=16, color='tab:gray', alpha=0.7, label='trials',
               zorder=2)
    if surv:
        ax.scatter([g for g, _ in surv], [v for _, v in surv], s=40, facecolors='none', edgecolors='tab:red',
                   linewidths=1.4, label=f'final survivors ({len(surv)})', zorder=3)
    ax.set_xlabel('generation')
    ax.set_ylabel(f'default ({"maximize" if maximize else "minimize"})')
    integer_ticks(ax.xaxis)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if log and any('new_survivors' in e for e in log):
        ax3 = ax.twinx()
        ax3.bar([e['generation'] for e in log], [e.get('new_survivors', 0) for e in log], width=0.5, alpha=0.25,
                color='tab:green', label='new survivors per generation', zorder=1)
        ax3.set_ylabel('new survivors')
        integer_ticks(ax3.yaxis)
        ax.set_zorder(ax3.get_zorder() + 1)  # the trials in front of the bars
        ax.patch.set_visible(False)
        h3, l3 = ax3.get_legend_handles_labels()
        handles, labels = handles + h3, labels + l3
    ax.legend(handles, labels, loc='best', fontsize='small')
    ax.set_title(f'{experiment_id}: trials and survivors per generation')
    save_png(fig, path)
    n_gen = len(set(gens.values()))
    return f'plot: {path.name} ({len(pts) + len(surv)} trials over {n_gen} generations, {len(surv)} final survivors)'
