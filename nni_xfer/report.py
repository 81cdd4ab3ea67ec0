"""Reports on the knowledge store: export of evaluations, a top-k table and plots.

``export_evaluations`` writes every evaluation (of one experiment or of all) as JSON or CSV.
``make_report`` writes, for one experiment, a fixed-width table of the best trials
(``report.txt``) and two PNG plots: validation accuracy over trials and accuracy against
model size with its Pareto front.

>>> pareto_front([(1, 0.5), (2, 0.7), (2, 0.6), (3, 0.7), (4, 0.9)])
[0, 1, 4]
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError
from .store import Evaluation, KnowledgeStore

__all__ = ['EXPORT_FIELDS', 'EXPORT_FORMATS', 'ReportResult', 'export_evaluations', 'pareto_front', 'make_report']

EXPORT_FIELDS = ['experiment_id', 'trial_id', 'parameter_id', 'strategy', 'space', 'dataset', 'architecture',
                 'parent', 'status', 'metrics', 'error', 'checkpoint', 'sha256', 'created', 'updated']
EXPORT_FORMATS = ['json', 'csv']

#: Columns of the CSV export before the ``metric.<key>`` columns (``error`` comes last).
_CSV_HEAD = [f for f in EXPORT_FIELDS if f not in ('metrics', 'error')]

VAL_ACC_PLOT = 'val_acc_over_trials.png'
PARETO_PLOT = 'acc_vs_params.png'
REPORT_TEXT = 'report.txt'

_ARCH_WIDTH = 60


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None`` (strict JSON has no NaN/Infinity)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _compact(obj: Any) -> str:
    return json.dumps(_clean(obj), sort_keys=True, separators=(',', ':'), default=str)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ''
    if isinstance(value, (dict, list, tuple)):
        return _compact(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ''
    return value


def export_evaluations(store: KnowledgeStore, fmt: str, out: TextIO, experiment_id: str | None = None) -> int:
    """Write the evaluations (of ``experiment_id``, or all) to ``out`` as ``json`` or ``csv``.

    JSON: a list of objects with the keys of :data:`EXPORT_FIELDS` (architecture, parent and
    metrics nested). CSV: one row per evaluation, architecture and parent as compact JSON, one
    ``metric.<key>`` column per metric key seen in any row (sorted), then ``error``.
    Returns the number of evaluations written.
    """
    fmt_norm = str(fmt).lower() if fmt is not None else fmt
    if fmt_norm not in EXPORT_FORMATS:
        raise ConfigError('--format', f'unknown export format {fmt!r}', allowed=EXPORT_FORMATS)
    evs = store.evaluations(experiment_id=experiment_id)
    rows = [{f: getattr(e, f) for f in EXPORT_FIELDS} for e in evs]
    if fmt_norm == 'json':
        json.dump(_clean(rows), out, indent=2, default=str)
        out.write('\n')
        return len(rows)

    metric_keys = sorted({str(k) for r in rows for k in (r['metrics'] or {})})
    header = _CSV_HEAD + [f'metric.{k}' for k in metric_keys] + ['error']
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(header)
    for r in rows:
        metrics = {str(k): v for k, v in (r['metrics'] or {}).items()}
        line = [_csv_cell(r[f]) for f in _CSV_HEAD]
        line += [_csv_cell(metrics.get(k)) for k in metric_keys]
        line.append(_csv_cell(r['error']))
        writer.writerow(line)
    return len(rows)


# ---------------------------------------------------------------------------------------------
# Pareto front
# ---------------------------------------------------------------------------------------------

def _num(value: Any) -> float | None:
    """A finite float, or ``None`` for a missing / non-numeric / non-finite value."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, minimising x (size) and maximising y (accuracy).

    A point is dominated when another is no larger in x and no smaller in y, and strictly
    better in one of them. Exact duplicates do not dominate each other, so every copy of a
    front point is returned. Points with a missing or non-finite coordinate are ignored.
    The result is ordered by increasing x (then original index): ready to draw as a line.
    O(n log n).
    """
    valid = []
    for i, p in enumerate(points):
        x, y = _num(p[0]), _num(p[1])
        if x is not None and y is not None:
            valid.append((x, -y, i))
    valid.sort()
    front: list[int] = []
    best_y = -math.inf            # best y among strictly smaller x
    j = 0
    while j < len(valid):
        x = valid[j][0]
        group_max = -valid[j][1]  # sorted by -y: the first of an x-group has the largest y
        k = j
        while k < len(valid) and valid[k][0] == x:
            if group_max > best_y and -valid[k][1] == group_max:
                front.append(valid[k][2])
            k += 1
        best_y = max(best_y, group_max)
        j = k
    return front


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

@dataclass
class ReportResult:
    """What :func:`make_report` produced: the table text, the PNGs written and the top-k."""

    table: str
    plots: list[Path] = field(default_factory=list)
    best: list[Evaluation] = field(default_factory=list)


def _known_experiments(store: KnowledgeStore) -> list[str]:
    ids = [e['experiment_id'] for e in store.experiments()]
    for ev in store.evaluations():
        if ev.experiment_id not in ids:
            ids.append(ev.experiment_id)
    return ids


def _maximize(store: KnowledgeStore, experiment_id: str) -> bool:
    for exp in store.experiments():
        if exp['experiment_id'] == experiment_id:
            config = exp.get('config')
            mode = config.get('mode') if isinstance(config, dict) else None
            return str(mode).lower() not in ('minimize', 'min')
    return True


def _si(value: Any) -> str:
    v = _num(value)
    if v is None:
        return '-'
    for div, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if abs(v) >= div:
            return f'{v / div:.2f}{suffix}'
    return f'{v:g}' if v != int(v) else str(int(v))


def _fixed(value: Any, digits: int = 4) -> str:
    v = _num(value)
    return '-' if v is None else f'{v:.{digits}f}'


def _arch_text(arch: Any, width: int = _ARCH_WIDTH) -> str:
    if isinstance(arch, dict):
        parts = []
        for k, v in arch.items():
            vs = v if isinstance(v, str) else _compact(v)
            parts.append(f'{k}={vs}')
        text = ', '.join(parts)
    else:
        text = _compact(arch)
    if len(text) > width:
        text = text[:width - 3].rstrip(', ') + '...'
    return text


def _trial_name(ev: Evaluation) -> str:
    return ev.trial_id or f'#{ev.parameter_id}'


def _format_table(header: str, rows: list[list[str]], columns: list[str], numeric: set[str]) -> list[str]:
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            if i == len(cells) - 1:          # last column: left-aligned, no padding
                out.append(c)
            elif columns[i] in numeric:
                out.append(c.rjust(w))
            else:
                out.append(c.ljust(w))
        return '  '.join(out).rstrip()

    lines = [header, line(columns), line(['-' * w for w in widths])]
    lines += [line(r) for r in rows]
    return lines


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas below
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _plot_val_acc(evs: list[Evaluation], path: Path, experiment_id: str) -> str:
    """Validation accuracy per trial (proposal order) and its running best. Returns a note."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    xs, ys, best_line, failed_x = [], [], [], []
    best = -math.inf
    for i, ev in enumerate(evs):
        if ev.status == 'FAILED':
            failed_x.append(i)
            continue
        if ev.status != 'SUCCEEDED':
            continue
        v = _num(ev.metric('val_acc'))
        if v is None:
            continue
        xs.append(i)
        ys.append(v)
        best = max(best, v)
        best_line.append(best)
    ax.scatter(xs, ys, s=18, color='tab:blue', label='val_acc', zorder=3)
    ax.step(xs, best_line, where='post', color='tab:orange', label='running best', zorder=2)
    if failed_x:
        # at the bottom of the axes, whatever the data range
        from matplotlib.transforms import blended_transform_factory
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        ax.scatter(failed_x, [0.03] * len(failed_x), marker='x', color='tab:red', transform=trans,
                   label=f'failed ({len(failed_x)})', zorder=3, clip_on=False)
    ax.set_xlabel('trial (order of proposal)')
    ax.set_ylabel('validation accuracy')
    ax.set_title(f'{experiment_id}: validation accuracy over trials')
    ax.grid(True, alpha=0.3)
    ax.legend(loc='best', fontsize='small')
    fig.tight_layout()
    fig.savefig(path, format='png')
    note = f'plot: {path.name} ({len(xs)} trials'
    if failed_x:
        note += f', {len(failed_x)} failed marked x'
    return note + ')'


def _plot_pareto(evs: list[Evaluation], path: Path, experiment_id: str) -> str:
    """val_acc against params (log x) with the Pareto front. Returns a note."""
    pts, names = [], []
    for ev in evs:
        p, a = _num(ev.metric('params')), _num(ev.metric('val_acc'))
        if p is not None and a is not None and p > 0:
            pts.append((p, a))
            names.append(_trial_name(ev))
    front = pareto_front(pts)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color='tab:gray', alpha=0.7, label='trials',
               zorder=2)
    fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
    ax.plot(fx, fy, '-o', color='tab:red', markersize=6, label=f'Pareto front ({len(front)})', zorder=3)
    for i in front:
        ax.annotate(names[i], pts[i], textcoords='offset points', xytext=(4, 4), fontsize=7)
    ax.set_xscale('log')
    ax.set_xlabel('parameters')
    ax.set_ylabel('validation accuracy')
    ax.set_title(f'{experiment_id}: accuracy vs. parameters')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(loc='best', fontsize='small')
    fig.tight_layout()
    fig.savefig(path, format='png')
    return f'plot: {path.name} ({len(pts)} trials, {len(front)} on the Pareto front)'


def make_report(store: KnowledgeStore, experiment_id: str, out_dir: str | Path, k: int = 10) -> ReportResult:
    """Top-k table (also ``out_dir/report.txt``) and the plots of one experiment.

    The top-k are the SUCCEEDED evaluations ranked by their ``default`` metric, descending
    unless the experiment's config says ``mode: minimize`` (ties: earlier proposal first).
    A plot whose metric is missing from every trial is skipped, and the table says so.
    """
    evs = store.evaluations(experiment_id=experiment_id)
    if not evs:
        raise ConfigError('EXPERIMENT_ID', f'no evaluations for {experiment_id!r} in {store.path}',
                          allowed=_known_experiments(store))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError('k', f'must be a positive integer, got {k!r}')
    evs.sort(key=lambda e: e.parameter_id)     # order of proposal
    maximize = _maximize(store, experiment_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    succeeded = [e for e in evs if e.status == 'SUCCEEDED']
    n_failed = sum(e.status == 'FAILED' for e in evs)
    n_pending = sum(e.status in ('WAITING', 'RUNNING') for e in evs)  # CANCELED: never ran, not pending
    ranked = [e for e in succeeded if _num(e.metric('default')) is not None]
    ranked.sort(key=lambda e: (-_num(e.metric('default')) if maximize else _num(e.metric('default')),
                               e.parameter_id))
    best = ranked[:k]

    header = (f'experiment {experiment_id}: {len(succeeded)} succeeded, {n_failed} failed, {len(evs)} total'
              + (f' ({n_pending} waiting/running)' if n_pending else '')
              + f'; top {len(best)} by default ({"maximize" if maximize else "minimize"})')
    columns = ['rank', 'trial', 'default', 'val_acc', 'inherited_acc', 'params', 'flops', 'train_seconds',
               'architecture']
    numeric = {'rank', 'default', 'val_acc', 'inherited_acc', 'params', 'flops', 'train_seconds'}
    rows = []
    for rank, ev in enumerate(best, 1):
        rows.append([str(rank), _trial_name(ev), _fixed(ev.metric('default')), _fixed(ev.metric('val_acc')),
                     _fixed(ev.metric('inherited_acc')), _si(ev.metric('params')), _si(ev.metric('flops')),
                     _fixed(ev.metric('train_seconds'), 1), _arch_text(ev.architecture)])
    lines = _format_table(header, rows, columns, numeric)
    if not best:
        lines.append('(no succeeded evaluation with a default metric)')

    notes, plots = [], []
    has_val = any(_num(e.metric('val_acc')) is not None for e in succeeded)
    has_params = any(_num(e.metric('params')) is not None and _num(e.metric('params')) > 0 for e in succeeded)
    for name, ok, missing, draw in (
            (VAL_ACC_PLOT, has_val, 'no trial reported val_acc', _plot_val_acc),
            (PARETO_PLOT, has_val and has_params,
             'no trial reported val_acc' if not has_val else 'no trial reported params > 0', _plot_pareto)):
        path = out_dir / name
        if ok:
            notes.append(draw(evs if draw is _plot_val_acc else succeeded, path, experiment_id))
            plots.append(path)
        else:
            if path.exists():          # do not leave a stale plot of an earlier report next to this one
                path.unlink()
            notes.append(f'plot skipped: {name} ({missing})')
    from .registry import REPORT_SECTIONS
    import inspect
    for entry in REPORT_SECTIONS.entries():   # method sections (e.g. ModuleNet's comparison table)
        wants = inspect.signature(entry.obj).parameters   # optional: store, out_dir, plots (appends PNG paths)
        offered = {'store': store, 'out_dir': out_dir, 'plots': plots}
        section = entry.obj(succeeded, experiment_id, **{k: v for k, v in offered.items() if k in wants})
        if section:
            lines.append('')
            lines += section
    lines.append('')
    lines += notes
    table = '\n'.join(lines) + '\n'
    (out_dir / REPORT_TEXT).write_text(table, encoding='utf-8')
    return ReportResult(table=table, plots=plots, best=best)


# helpers for the report sections of method packages
num, fixed, si, trial_name, format_table = _num, _fixed, _si, _trial_name, _format_table
