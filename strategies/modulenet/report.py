"""ModuleNet's report section (paper Tables I-III): fine-tuned searched chains vs. the original networks."""
from __future__ import annotations

from nni_xfer.registry import REPORT_SECTIONS
from nni_xfer.report import fixed, format_table, num, si, trial_name
from nni_xfer.store import Evaluation


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
