"""Reports on the knowledge store: export of evaluations, a top-k table and plots.

``export_evaluations`` writes every evaluation (of one experiment or of all) as JSON or CSV.
``make_report`` writes, for one experiment, a fixed-width table of the best trials
(``report.txt``: the report and nothing else; the same rows, unformatted and with the whole
architecture, as ``report.csv``) and PNG plots: validation accuracy over trials, accuracy against
model size with its Pareto front, the parent→child lineage of experiments whose trials have
parents (EAS, EAT-NAS, NAO: ``lineage.png``, coloured by accuracy, with each child's
``inherited_acc`` against its parent's accuracy); method packages add their own sections and plots
(:data:`nni_xfer.registry.REPORT_SECTIONS`, e.g. ModuleNet's ``generations.png``). Trials are named by their NNI trial id everywhere (table, lineage plot,
Pareto labels), the proposal number beside it in the table. What the command prints is the report
followed by one line per plot and the folder they went to.

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

__all__ = ['EXPORT_FIELDS', 'EXPORT_FORMATS', 'ReportResult', 'export_evaluations', 'pareto_front', 'make_report',
           'lineage_layout']

EXPORT_FIELDS = ['experiment_id', 'trial_id', 'proposal_id', 'strategy', 'space', 'dataset', 'architecture',
                 'parent', 'status', 'metrics', 'error', 'checkpoint', 'sha256', 'created', 'updated']
EXPORT_FORMATS = ['json', 'csv']

#: Columns of the CSV export before the ``metric.<key>`` columns (``error`` comes last).
_CSV_HEAD = [f for f in EXPORT_FIELDS if f not in ('metrics', 'error')]

VAL_ACC_PLOT = 'val_acc_over_trials.png'
PARETO_PLOT = 'acc_vs_params.png'
LINEAGE_PLOT = 'lineage.png'
REPORT_TEXT = 'report.txt'
REPORT_CSV = 'report.csv'

_ARCH_WIDTH = 60   # the architecture column wraps at this width, between tokens (never inside one)


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
    """What :func:`make_report` produced: what to print (``table``: the report, then one line per plot
    and the folder), the report alone (``text``, the content of ``report.txt``), the PNGs written
    and the top-k."""

    table: str
    plots: list[Path] = field(default_factory=list)
    best: list[Evaluation] = field(default_factory=list)
    text: str = ''


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


def _arch_text(arch: Any, width: int | None = _ARCH_WIDTH) -> str:
    """The whole architecture as readable text (``key=value, ...``; a list of strings space-joined,
    e.g. EAS layer tokens; anything nested as JSON), wrapped onto lines of at most ``width``
    characters between tokens; a single token longer than that keeps a line of its own, uncut."""
    def value(v: Any) -> str:
        if isinstance(v, str):
            return v
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v):
            return ' '.join(v)
        if isinstance(v, dict) and all(x is None or isinstance(x, (str, int, float, bool)) for x in v.values()):
            # one token per dict ({op:mbconv6,kernel:3,...}): a wrapped line never splits a key from its value
            return '{' + ','.join(f'{k}:{x if isinstance(x, str) else json.dumps(_clean(x))}' for k, x in v.items()) + '}'
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            return '[' + ', '.join(value(x) for x in v) + ']'
        return json.dumps(_clean(v), separators=(', ', ': '), default=str)

    if isinstance(arch, dict):
        text = ', '.join(f'{k}={value(v)}' for k, v in arch.items())
    else:
        text = value(arch)
    if not width:
        return text
    import textwrap
    return '\n'.join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)) or text


def _trial_name(ev: Evaluation) -> str:
    """A trial's name in every report: its NNI trial id (``#<proposal>`` before NNI gave it one)."""
    return ev.trial_id or f'#{ev.proposal_id}'


def _format_table(header: str, rows: list[list[str]], columns: list[str], numeric: set[str]) -> list[str]:
    """A fixed-width table; the last column may hold several lines (continuation lines start under it)."""
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns[:-1])]

    def line(cells: list[str]) -> list[str]:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            out.append(c.rjust(w) if columns[i] in numeric else c.ljust(w))
        head = '  '.join(out)
        last = str(cells[-1]).split('\n')
        indent = ' ' * (len(head) + 2) if out else ''
        return [(head + '  ' + last[0] if out else last[0]).rstrip()] + [(indent + more).rstrip() for more in last[1:]]

    lines = [header] + line(columns) + line(['-' * w for w in widths] + ['-' * len(columns[-1])])
    for r in rows:
        lines += line(r)
    return lines


def _figure(figsize: tuple[float, float] = (7, 4.5)):
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas below
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _integer_ticks(axis) -> None:
    """Whole-number ticks on an axis that counts trials or generations."""
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: Path) -> None:
    """Lay out and write a PNG with nothing clipped (labels, annotations, legends outside the axes)."""
    fig.tight_layout()
    fig.savefig(path, format='png', bbox_inches='tight', pad_inches=0.1)


def _params_axis(ax, values: list[float]) -> None:
    """A readable parameter-count axis: log scale with ticks at 1, 2 and 5 x 10^k labelled ``50K``,
    ``100K``, ``2M``... when the values span a decade or more, else linear with about five such ticks
    (a plain log axis over 44K-123K labels only ``10^5``). On the x axis of ``ax``."""
    from matplotlib.ticker import EngFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator
    fmt = EngFormatter(sep='')
    axis = ax.xaxis
    if values and max(values) >= 10 * min(values):
        ax.set_xscale('log')
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_major_locator(MaxNLocator(nbins=5))
    axis.set_major_formatter(fmt)


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
    _integer_ticks(ax.xaxis)
    ax.set_title(f'{experiment_id}: validation accuracy over trials')
    ax.grid(True, alpha=0.3)
    ax.legend(loc='best', fontsize='small')
    _save(fig, path)
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
    _params_axis(ax, [p[0] for p in pts])
    ax.set_xlabel('parameters')
    ax.set_ylabel('validation accuracy')
    ax.set_title(f'{experiment_id}: accuracy vs. parameters')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(loc='best', fontsize='small')
    _save(fig, path)
    return f'plot: {path.name} ({len(pts)} trials, {len(front)} on the Pareto front)'


def _parent_key(ev: Evaluation) -> tuple[str, int] | None:
    p = ev.parent
    if not isinstance(p, dict) or p.get('experiment_id') is None:
        return None
    pid = p.get('proposal_id')
    try:
        return str(p['experiment_id']), int(pid)
    except (TypeError, ValueError):
        return None


def _acc_key(evs: list[Evaluation]) -> str:
    """``val_acc`` when trials report it, else ``default``: what the lineage colours by."""
    return 'val_acc' if any(_num(e.metric('val_acc')) is not None for e in evs) else 'default'


def lineage_layout(parents: dict[Any, Any]) -> dict[Any, tuple[int, float]]:
    """A layered layout of a forest: ``{node: parent or None}`` → ``{node: (depth, position)}``.

    Depth is the number of parent steps from a root (a parent outside the map is none); in each
    layer nodes are ordered by their parent's position, then by key, and spaced one apart around 0.
    A cycle (corrupt data) is cut where it closes.

    >>> lineage_layout({0: None, 1: 0, 2: 0, 3: 1})
    {0: (0, 0.0), 1: (1, -0.5), 2: (1, 0.5), 3: (2, 0.0)}
    """
    depth: dict[Any, int] = {}
    for node in parents:
        chain, cur = [], node
        while cur in parents and cur not in depth and cur not in chain:
            chain.append(cur)
            cur = parents[cur]
        base = depth[cur] + 1 if cur in depth else 0
        for i, n in enumerate(reversed(chain)):
            depth[n] = base + i
    layers: dict[int, list] = {}
    for node in sorted(parents, key=lambda n: (depth[n], str(type(n)), n)):
        layers.setdefault(depth[node], []).append(node)
    pos: dict[Any, tuple[int, float]] = {}
    for d in sorted(layers):
        nodes = sorted(layers[d], key=lambda n: (pos[parents[n]][1] if parents.get(n) in pos else -math.inf,
                                                  str(type(n)), n))
        for i, n in enumerate(nodes):
            pos[n] = (d, i - (len(nodes) - 1) / 2)
    return {n: pos[n] for n in parents}


def _plot_lineage(store: KnowledgeStore, evs: list[Evaluation], path: Path, experiment_id: str) -> str | None:
    """Parent→child tree of an experiment, coloured by accuracy, and each child's accuracy right after
    inheriting its weights (``inherited_acc``) against its parent's accuracy. ``None`` without parents."""
    own = {(e.experiment_id, e.proposal_id): e for e in evs}
    if not any(_parent_key(e) is not None for e in evs):
        return None
    nodes: dict[tuple[str, int], Evaluation | None] = dict(own)
    for e in evs:  # a parent in another experiment (EAT-NAS seed, resumed searches) is drawn as a root
        pk = _parent_key(e)
        if pk is not None and pk not in nodes:
            nodes[pk] = store.get(*pk)
    parents = {key: (_parent_key(e) if e is not None else None) for key, e in nodes.items()}
    parents = {k: (v if v in nodes and v != k else None) for k, v in parents.items()}
    layout = lineage_layout(parents)
    key = _acc_key([e for e in nodes.values() if e is not None])

    def acc(e: Evaluation | None) -> float | None:
        return None if e is None or e.status != 'SUCCEEDED' else _num(e.metric(key))

    depth_n = max(d for d, _ in layout.values()) + 1
    width_n = max(sum(1 for d, _ in layout.values() if d == layer) for layer in range(depth_n))
    fig = _figure((11, min(14.0, max(4.5, 0.22 * width_n + 2))))
    gs = fig.add_gridspec(1, 2, width_ratios=[2.2, 1])
    ax, ax2 = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
    from matplotlib.collections import LineCollection
    segs = [[layout[p], layout[c]] for c, p in parents.items() if p is not None]
    ax.add_collection(LineCollection(segs, colors='0.6', linewidths=0.8, zorder=1))
    known = [(k, acc(nodes[k])) for k in nodes if acc(nodes[k]) is not None]
    sc = None
    if known:
        vals = [a for _, a in known]
        sc = ax.scatter([layout[k][0] for k, _ in known], [layout[k][1] for k, _ in known], c=vals, cmap='viridis',
                        vmin=min(vals), vmax=max(vals) if max(vals) > min(vals) else min(vals) + 1e-9, s=40,
                        edgecolors=['tab:red' if k[0] != experiment_id else 'k' for k, _ in known],
                        linewidths=[1.5 if k[0] != experiment_id else 0.4 for k, _ in known], zorder=3)
        fig.colorbar(sc, ax=ax, label=key, fraction=0.05, pad=0.02)
    failed = [k for k, e in nodes.items() if e is not None and e.status == 'FAILED']
    if failed:
        ax.scatter([layout[k][0] for k in failed], [layout[k][1] for k in failed], marker='x', color='tab:red',
                   s=30, label=f'failed ({len(failed)})', zorder=3)
    other = [k for k, e in nodes.items() if acc(e) is None and (e is None or e.status != 'FAILED')]
    if other:
        ax.scatter([layout[k][0] for k in other], [layout[k][1] for k in other], facecolors='none',
                   edgecolors='0.4', s=30, label=f'no result ({len(other)})', zorder=3)
    if len(nodes) <= 60:   # the names of the report's table: NNI trial ids (other experiments: <id>:<trial>)
        for k, (x, y) in layout.items():
            e = nodes[k]
            name = _trial_name(e) if e is not None else f'#{k[1]}'
            ax.annotate(name if k[0] == experiment_id else f'{k[0]}:{name}', (x, y),
                        textcoords='offset points', xytext=(0, 6), ha='center', fontsize=6)
    ax.set_xlim(-0.5, depth_n - 0.5)
    spread = max(abs(y) for _, y in layout.values()) if layout else 0.0
    ax.set_ylim(spread + 0.8, -spread - 0.8)  # first in each layer on top
    _integer_ticks(ax.xaxis)
    ax.set_yticks([])
    ax.set_xlabel('generation (parent steps from a root)')
    n_ext = sum(1 for k in nodes if k[0] != experiment_id)
    ax.set_title(f'{experiment_id}: lineage ({len(own)} trials'
                 + (f'; red rim: {n_ext} parent(s) from other experiments' if n_ext else '') + ')', fontsize=10)
    if failed or other:
        ax.legend(loc='upper left', fontsize='small')

    # inherited_acc of each child against its parent's accuracy (on the diagonal: function-preserving)
    xs, ys = [], []
    for c, p in parents.items():
        if p is None or c[0] != experiment_id:
            continue
        pa, ia = acc(nodes[p]), _num(nodes[c].metric('inherited_acc')) if nodes[c] is not None else None
        if pa is not None and ia is not None:
            xs.append(pa)
            ys.append(ia)
    if xs:
        lo, hi = min(xs + ys), max(xs + ys)
        pad = 0.02 * (hi - lo or 1)
        ax2.plot([lo - pad, hi + pad], [lo - pad, hi + pad], '--', color='0.5', lw=0.8, label='inherited = parent')
        ax2.scatter(xs, ys, s=18, color='tab:blue', zorder=3, label=f'children ({len(xs)})')
        ax2.legend(loc='best', fontsize='small')
    else:
        ax2.text(0.5, 0.5, 'no child reported inherited_acc', ha='center', va='center', transform=ax2.transAxes,
                 fontsize=8)
    ax2.set_xlabel(f'parent {key}')
    ax2.set_ylabel('child inherited_acc (before training)')
    ax2.set_title('inherited vs. parent accuracy', fontsize=10)
    ax2.grid(True, alpha=0.3)
    _save(fig, path)
    close = sum(1 for x, y in zip(xs, ys) if abs(x - y) <= 0.01)
    return (f'plot: {path.name} (lineage of {len(own)} trials, {depth_n} generations; '
            f'inherited_acc of {len(xs)} children: {close} within 0.01 of the parent\'s {key})')


def _write_csv(path: Path, columns: list[str], rows: list[list[Any]]) -> None:
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_csv_cell(v) for v in r])


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
    evs.sort(key=lambda e: e.proposal_id)     # order of proposal
    maximize = _maximize(store, experiment_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    succeeded = [e for e in evs if e.status == 'SUCCEEDED']
    n_failed = sum(e.status == 'FAILED' for e in evs)
    n_pending = sum(e.status in ('WAITING', 'RUNNING') for e in evs)  # CANCELED: never ran, not pending
    ranked = [e for e in succeeded if _num(e.metric('default')) is not None]
    ranked.sort(key=lambda e: (-_num(e.metric('default')) if maximize else _num(e.metric('default')),
                               e.proposal_id))
    best = ranked[:k]

    header = (f'experiment {experiment_id}: {len(succeeded)} succeeded, {n_failed} failed, {len(evs)} total'
              + (f' ({n_pending} waiting/running)' if n_pending else '')
              + f'; top {len(best)} by default ({"maximize" if maximize else "minimize"})')
    by_pid = {e.proposal_id: e for e in evs}

    def parent_name(ev: Evaluation) -> str:
        pk = _parent_key(ev)
        if pk is None:
            return '-'
        pe = by_pid.get(pk[1]) if pk[0] == experiment_id else store.get(*pk)
        name = _trial_name(pe) if pe is not None else f'#{pk[1]}'
        return name if pk[0] == experiment_id else f'{pk[0]}:{name}'

    lineage = any(_parent_key(e) is not None for e in evs)
    columns = ['rank', 'trial', 'proposal'] + (['parent'] if lineage else []) + [
        'default', 'val_acc', 'inherited_acc', 'params', 'flops', 'train_seconds', 'architecture']
    numeric = {'rank', 'proposal', 'default', 'val_acc', 'inherited_acc', 'params', 'flops', 'train_seconds'}
    rows = []
    for rank, ev in enumerate(best, 1):
        rows.append([str(rank), _trial_name(ev), str(ev.proposal_id)] + ([parent_name(ev)] if lineage else []) + [
            _fixed(ev.metric('default')), _fixed(ev.metric('val_acc')), _fixed(ev.metric('inherited_acc')),
            _si(ev.metric('params')), _si(ev.metric('flops')), _fixed(ev.metric('train_seconds'), 1),
            _arch_text(ev.architecture)])
    lines = _format_table(header, rows, columns, numeric)
    if not best:
        lines.append('(no succeeded evaluation with a default metric)')
    # the same rows, unformatted (full precision, whole architecture as JSON)
    csv_columns = ['rank', 'trial', 'proposal_id', 'parent', 'default', 'val_acc', 'inherited_acc', 'params', 'flops',
                   'train_seconds', 'checkpoint', 'architecture']
    _write_csv(out_dir / REPORT_CSV, csv_columns,
               [[rank, _trial_name(ev), ev.proposal_id, None if _parent_key(ev) is None else parent_name(ev)]
                + [_num(ev.metric(c)) for c in csv_columns[4:10]]
                + [ev.checkpoint or (ev.metrics or {}).get('checkpoint'), ev.architecture]
                for rank, ev in enumerate(best, 1)])

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
    path = out_dir / LINEAGE_PLOT
    note = _plot_lineage(store, evs, path, experiment_id)
    if note is None:   # no parents in this experiment: no note, no stale file
        if path.exists():
            path.unlink()
    else:
        notes.append(note)
        plots.append(path)
    from .registry import REPORT_SECTIONS
    import inspect
    for entry in REPORT_SECTIONS.entries():   # method sections (e.g. ModuleNet's comparison table)
        wants = inspect.signature(entry.obj).parameters   # optional: store, out_dir, plots (appends PNG paths)
        offered = {'store': store, 'out_dir': out_dir, 'plots': plots}
        section = entry.obj(succeeded, experiment_id, **{k: v for k, v in offered.items() if k in wants})
        # a section's lines naming its plots are console notes, like the core's (report.txt is the report)
        kept = []
        for s in section or []:
            (notes if s.startswith(('plot: ', 'plot skipped: ')) else kept).append(s)
        if kept:
            lines.append('')
            lines += kept
    # every plot named once: the core's notes, the sections' own lines, then any a section only listed
    unique: list[Path] = []
    for path in plots:
        if Path(path) not in unique:
            unique.append(Path(path))
    announced = ' '.join(lines + notes)
    notes += [f'plot: {p.name}' for p in unique if f'plot: {p.name}' not in announced]
    text = '\n'.join(lines) + '\n'
    (out_dir / REPORT_TEXT).write_text(text, encoding='utf-8')
    console = notes + [f'written to {out_dir}: {REPORT_TEXT}, {REPORT_CSV}' + (' and the plots above' if unique else '')]
    return ReportResult(table=text + '\n' + '\n'.join(console) + '\n', plots=unique, best=best, text=text)


# helpers for the report sections of method packages
num, fixed, si, trial_name, format_table = _num, _fixed, _si, _trial_name, _format_table
figure, integer_ticks, save_png, maximize_of = _figure, _integer_ticks, _save, _maximize
