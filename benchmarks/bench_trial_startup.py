"""Benchmark (not a test): trial start-up, process start -> first training step (issue 13), and a
whole 0-epoch trial process (issue 23).

    python benchmarks/bench_trial_startup.py [--repeats 2] [--spaces simple_cnn,...] [--legacy] [--no-datasets]
                                             [--no-warm] [--share-spaces simple_cnn,eas_plain_cnn]
                                             [--no-importtime] [--import-threshold 0.1]

For every registered search space this starts a fresh ``python -m nni_xfer.trial --spec`` on the
space's ``example()`` sample (``evaluator: train``, 1 epoch, a small dataset: ``digits``, or
``synthetic`` at the space's ``contract_image_size``) and times it from the parent's ``Popen`` to
the end of the first optimizer step, where a global ``torch.optim`` step hook ends the process.
The divisor is a bare ``python -c "import torch, torchvision"`` timed the same way in the same run
(runs interleaved, medians reported). The trial runs under a private ``NNI_XFER_HOME`` whose
dataset cache is primed first (a trial reads the cache and does not rebuild the dataset); the
``cold`` column is the first trial of each dataset, which builds the cache.

``--legacy`` adds a row per space with ``NNI_XFER_LEAN_IMPORTS=0`` (NNI's default imports: the
trial then loads PyTorch Lightning and torchmetrics) so that before/after is measured in one run.
The ``lightning`` column says whether ``pytorch_lightning``/``torchmetrics`` were in ``sys.modules``
at the first step. Last, the dataset cache: ``load_dataset`` in a fresh process without the cache,
building it, and reading it (``digits`` and a 50k-image CIFAR-shaped ``synthetic`` set).

Warm launcher (issue 13 item 5; ``--no-warm`` skips it): the same spec through
``python -m nni_xfer.launch --spec`` (the trial forked from a server that has imported torch, NNI
and nni-xfer), from the client's ``Popen`` to the end of the first optimizer step (a hook the server
preloads ends the trial there; the client exits with it). The server is started once by a first,
untimed client (its start-up, ``server start`` below, is paid once per machine and idle period).
``set-up share`` (spaces of ``--share-spaces``): a whole 1-epoch trial, direct and warm, and the
share of its wall time (client start to exit) that is not training (``train_seconds`` of its final
metrics).

Whole trial (issue 23 item 1): ``python -m nni_xfer.trial --spec`` of the same spec with
``epochs: 0`` (read the cached dataset, build and initialise the model, evaluate it, count its
FLOPs, write its checkpoint and artifacts, report the final metrics), process start to exit, over the
same bare-import median (target <= 1.3 for every space). ``removed`` says whether any of
``nni_xfer.runtime.lightweight.REMOVED_MODULES`` (``scipy.stats``, ``torch.utils.flop_counter``,
``torch._dynamo``) was imported by the trial; ``torch._dynamo`` is counted only when the trial did not
import ``torchvision``, whose ``import`` loads it (so does the bare-import baseline). Import-time
breakdown (``--no-importtime`` skips it): one ``python -X importtime`` run of each whole trial, the
top-level imports taking at least ``--import-threshold`` seconds (cumulative, as ``-X importtime``
reports them; ``!`` marks those above 0.3 s).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The child: runs the trial module as ``python -m nni_xfer.trial`` would (``__main__``), with a
# global optimizer step hook that reports and ends the process after the first step.
CHILD = r'''
import os, sys, json, runpy
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
out = sys.argv[2]
import torch.optim.optimizer as _opt
def _first_step(optimizer, args, kwargs):
    heavy = sorted({m.split('.')[0] for m in sys.modules
                    if m.split('.')[0] in ('pytorch_lightning', 'lightning', 'lightning_fabric', 'torchmetrics')})
    with open(out, 'w') as f:
        json.dump({'heavy': heavy, 'modules': len(sys.modules)}, f)
    sys.stdout.flush()
    os._exit(0)
_opt.register_optimizer_step_post_hook(_first_step)
sys.argv = ['nni_xfer.trial', '--spec', sys.argv[1]]
runpy.run_module('nni_xfer.trial', run_name='__main__', alter_sys=True)
raise SystemExit('the trial ended without a training step')
'''


# Preloaded by the warm launcher's server (NNI_XFER_LAUNCHER_PRELOAD): in a trial whose environment
# names a marker file, the first optimizer step writes it and ends the trial (exit code 0).
WARM_HOOK = r'''
import json, os, sys
import torch.optim.optimizer as _opt
def _first_step(optimizer, args, kwargs):
    out = os.environ.get('BENCH_FIRST_STEP')
    if not out:
        return
    heavy = sorted({m.split('.')[0] for m in sys.modules
                    if m.split('.')[0] in ('pytorch_lightning', 'lightning', 'lightning_fabric', 'torchmetrics')})
    with open(out, 'w') as f:
        json.dump({'heavy': heavy, 'modules': len(sys.modules)}, f)
    sys.stdout.flush()
    os._exit(0)
_opt.register_optimizer_step_post_hook(_first_step)
'''


# A whole trial as ``python -m nni_xfer.trial --spec`` runs it (``__main__``); at exit it writes which
# of the issue-23 removed modules were imported.
WHOLE_CHILD = r'''
import atexit, json, runpy, sys
out = sys.argv[2]
def _report():
    from nni_xfer.runtime.lightweight import removed_modules_loaded
    removed = [m for m in removed_modules_loaded()
               if not (m.startswith('torch._dynamo') and 'torchvision' in sys.modules)]
    with open(out, 'w') as f:
        json.dump({'removed': sorted({m for m in removed if m.count('.') <= 2}),
                   'torchvision': 'torchvision' in sys.modules}, f)
atexit.register(_report)
sys.argv = ['nni_xfer.trial', '--spec', sys.argv[1]]
runpy.run_module('nni_xfer.trial', run_name='__main__', alter_sys=True)
'''


def import_roots(stderr: str, threshold: float) -> list[tuple[str, float]]:
    """Top-level imports of a ``-X importtime`` log with cumulative time >= ``threshold`` s."""
    roots = []
    for line in stderr.splitlines():
        if not line.startswith('import time:') or 'self [us]' in line:
            continue
        _, cumulative, name = line.split(':', 1)[1].split('|')
        if name.startswith(' ') and not name.startswith('  '):  # depth 0: one space after the bar
            t = int(cumulative) / 1e6
            if t >= threshold:
                roots.append((name.strip(), t))
    return sorted(roots, key=lambda r: -r[1])


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f'{" ".join(cmd[:3])}... failed ({p.returncode}):\n{p.stdout[-3000:]}')
    return dt


def space_cases(names: list[str] | None, tmp: Path) -> list[dict]:
    """One trial spec per space: its example() sample on a small dataset."""
    from nni_xfer.data.pipeline import dataset_info
    from nni_xfer.registry import SEARCH_SPACES
    from nni_xfer.space import build_space, space_info

    cases = []
    for name in names or SEARCH_SPACES.names():
        cls = SEARCH_SPACES.get(name, field='space')
        fn = getattr(cls, 'contract_space_args', None)
        space_args = fn(tmp / f'args-{name}') if fn is not None else {}
        size = getattr(cls, 'contract_image_size', None)
        if size:
            dataset, dataset_args = 'synthetic', {'image_size': size, 'num_classes': 10, 'num_samples': 256}
        else:
            dataset, dataset_args = 'digits', {}
        space = build_space(name, space_args, dataset_info(dataset, **dataset_args))
        # spaces whose samples are not plain choices may describe their example in SpaceInfo.extra
        sample = space_info(name, space_args, space).extra.get('example') or space.example()
        spec = {'space': name, 'space_args': space_args, 'architecture': sample, 'dataset': dataset,
                'dataset_args': dataset_args, 'evaluator': 'train',
                'evaluator_args': {'epochs': 1, 'batch_size': 32}, 'checkpoint_root': str(tmp / 'ckpt'),
                'experiment_id': 'bench'}
        path = tmp / f'spec-{name}.json'
        path.write_text(json.dumps(spec))
        whole = tmp / f'spec0-{name}.json'  # the whole 0-epoch trial of issue 23
        whole.write_text(json.dumps({**spec, 'evaluator_args': {**spec['evaluator_args'], 'epochs': 0}}))
        cases.append({'name': name, 'spec': path, 'whole': whole, 'dataset': dataset})
    return cases


DATASET_CHILD = r'''
import json, sys, time
import torch
t0 = time.perf_counter()
from nni_xfer.data.pipeline import load_dataset
s = load_dataset(sys.argv[1], cache=sys.argv[2] == '1', **json.loads(sys.argv[3]))
float(s.train_x.sum())  # touch every training image (memory-mapped pages are read here)
print(time.perf_counter() - t0)
'''

#: (dataset, dataset_args) timed by :func:`dataset_rows`: digits (scikit-learn) and a
#: CIFAR-shaped synthetic set of 50k images (issue 13 measured 2.4 s to build it)
DATASET_CASES = [('digits', {}), ('synthetic', {'num_samples': 50000, 'image_size': 32, 'in_channels': 3,
                                                'num_classes': 10})]


def dataset_rows(env: dict) -> None:
    """``load_dataset`` in a fresh process (after ``import torch``): no cache, first call (builds the
    cache), later call (memory-maps it)."""
    print('load_dataset in a fresh process, from importing the loader to all training images read:')
    for name, dargs in DATASET_CASES:
        def one(cache: bool) -> float:
            p = subprocess.run([sys.executable, '-c', DATASET_CHILD, name, '1' if cache else '0', json.dumps(dargs)],
                               env=env, cwd=str(ROOT), capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(p.stderr[-2000:])
            return float(p.stdout.strip().splitlines()[-1])
        off, build, hit = one(False), one(True), one(True)
        print(f'  {name} {json.dumps(dargs)}: no cache {off:.2f} s, builds cache {build:.2f} s, '
              f'from cache {hit:.3f} s ({off / max(hit, 1e-9):.0f}x)')


def run_out(cmd: list[str], env: dict) -> tuple[float, str]:
    """Wall time and output of ``cmd`` (an error if it fails or the launcher fell back)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.perf_counter() - t0
    if p.returncode or 'without the launcher' in p.stdout:
        raise SystemExit(f'{" ".join(cmd[:4])}... failed ({p.returncode}):\n{p.stdout[-3000:]}')
    return dt, p.stdout


def final_metrics(out: str) -> dict:
    line = [x for x in out.splitlines() if x.startswith('[final] ')][-1]
    return json.loads(line[len('[final] '):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeats', type=int, default=2, help='timed trial starts per space (median)')
    ap.add_argument('--spaces', help='comma-separated space names (default: every registered space)')
    ap.add_argument('--legacy', action='store_true', help='also time NNI_XFER_LEAN_IMPORTS=0 (before issue 13)')
    ap.add_argument('--no-datasets', action='store_true', help='skip the dataset cache timings')
    ap.add_argument('--no-warm', action='store_true', help='skip the warm launcher (python -m nni_xfer.launch)')
    ap.add_argument('--share-spaces', default='simple_cnn,eas_plain_cnn',
                    help='spaces whose whole 1-epoch trial gives the set-up share, direct and warm ("" for none)')
    ap.add_argument('--no-importtime', action='store_true', help='skip the -X importtime breakdown')
    ap.add_argument('--import-threshold', type=float, default=0.1,
                    help='seconds: top-level imports at least this long are listed in the breakdown')
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix='bench_startup_'))
    env = dict(os.environ, NNI_XFER_HOME=str(tmp / 'home'), OMP_WAIT_POLICY='PASSIVE')
    env.pop('NNI_FRAMEWORK', None)
    os.environ['NNI_XFER_HOME'] = env['NNI_XFER_HOME']
    cases = space_cases(args.spaces.split(',') if args.spaces else None, tmp)
    base_cmd = [sys.executable, '-c', 'import torch, torchvision']
    marker = tmp / 'first_step.json'
    (tmp / 'bench_first_step_hook.py').write_text(WARM_HOOK)
    warm_env = dict(env, NNI_XFER_LAUNCHER_PRELOAD='bench_first_step_hook', NNI_XFER_LAUNCHER_IDLE='900',
                    PYTHONPATH=os.pathsep.join(p for p in (str(tmp), env.get('PYTHONPATH')) if p))

    def trial(case: dict, lean: bool = True) -> tuple[float, list[str]]:
        e = dict(env, NNI_XFER_LEAN_IMPORTS='1' if lean else '0')
        dt = timed([sys.executable, '-c', CHILD, str(case['spec']), str(marker)], e)
        return dt, json.loads(marker.read_text())['heavy']

    whole_marker = tmp / 'whole.json'

    def whole_trial(case: dict) -> tuple[float, list[str]]:
        whole_marker.unlink(missing_ok=True)
        dt = timed([sys.executable, '-c', WHOLE_CHILD, str(case['whole']), str(whole_marker)], env)
        return dt, json.loads(whole_marker.read_text())['removed']

    def warm_trial(case: dict) -> tuple[float, list[str]]:
        marker.unlink(missing_ok=True)
        dt, out = run_out([sys.executable, '-m', 'nni_xfer.launch', '--spec', str(case['spec'])],
                          dict(warm_env, BENCH_FIRST_STEP=str(marker)))
        if not marker.exists():
            raise SystemExit(f'the warm trial ended without a training step:\n{out[-3000:]}')
        return dt, json.loads(marker.read_text())['heavy']

    from nni_xfer.runtime import warm_server as launcher
    try:
        timed(base_cmd, env)  # warm the page cache for torch/torchvision before anything is timed
        cold: dict[str, float] = {}
        for case in cases:  # the first trial per dataset builds the cache
            if case['dataset'] not in cold:
                cold[case['dataset']] = trial(case)[0]
                case['cold'] = cold[case['dataset']]
        server_start = None
        if not args.no_warm:  # the first client starts the server (untimed as a row; reported below)
            server_start = warm_trial(cases[0])[0]

        base: list[float] = []
        rows = []
        for case in cases:
            times, legacy, warm, heavy, warm_heavy, whole = [], [], [], [], [], []
            for _ in range(args.repeats):
                base.append(timed(base_cmd, env))
                dt, heavy = trial(case)
                times.append(dt)
                dt, case['removed'] = whole_trial(case)
                whole.append(dt)
                if args.legacy:
                    base.append(timed(base_cmd, env))
                    legacy.append(trial(case, lean=False)[0])
                if not args.no_warm:
                    dt, warm_heavy = warm_trial(case)
                    warm.append(dt)
            case['whole_time'] = statistics.median(whole)
            rows.append((case, statistics.median(times), statistics.median(legacy) if legacy else None,
                         statistics.median(warm) if warm else None, heavy + warm_heavy))
        b = statistics.median(base)
        print(f'python -c "import torch, torchvision": median {b:.2f} s over {len(base)} runs '
              f'(min {min(base):.2f}, max {max(base):.2f}); cores {os.cpu_count()}; '
              f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
        head = f'{"space":<16} {"dataset":<10} {"to first step":>13} {"ratio":>6} {"lightning":>9}'
        if args.legacy:
            head += f' {"legacy":>8} {"ratio":>6}'
        if not args.no_warm:
            head += f' {"warm launcher":>13} {"ratio":>6}'
        print(head + f' {"cold (builds cache)":>20}')
        for case, t, leg, w, heavy in rows:
            line = (f'{case["name"]:<16} {case["dataset"]:<10} {t:>11.2f} s {t / b:>6.2f} '
                    f'{"yes" if heavy else "no":>9}')
            if args.legacy:
                line += f' {leg:>6.2f} s {leg / b:>6.2f}'
            if w is not None:
                line += f' {w:>11.2f} s {w / b:>6.2f}'
            if 'cold' in case:
                line += f' {case["cold"]:>18.2f} s'
            print(line)
        ratios = [t / b for _, t, _, _, _ in rows]
        print(f'ratio to bare torch+torchvision import: median {statistics.median(ratios):.2f}, '
              f'max {max(ratios):.2f}')
        print('whole 0-epoch trial (python -m nni_xfer.trial --spec: data, model, evaluation, FLOPs, checkpoint, '
              'metrics), process start to exit:')
        print(f'{"space":<16} {"whole trial":>11} {"ratio":>6}  removed modules imported')
        for case, *_ in rows:
            print(f'{case["name"]:<16} {case["whole_time"]:>9.2f} s {case["whole_time"] / b:>6.2f}  '
                  f'{", ".join(case["removed"]) or "none"}')
        wratios = [case['whole_time'] / b for case, *_ in rows]
        print(f'whole trial / bare torch+torchvision import: median {statistics.median(wratios):.2f}, '
              f'max {max(wratios):.2f} (target <= 1.3); load average now '
              f'{" ".join(f"{x:.2f}" for x in os.getloadavg())}')
        if not args.no_warm:
            wr = [w / b for _, _, _, w, _ in rows]
            print(f'warm launcher (python -m nni_xfer.launch, client start -> first step): ratio median '
                  f'{statistics.median(wr):.2f}, max {max(wr):.2f}; the first client, which started the server, '
                  f'took {server_start:.2f} s to its first step')
            share_rows(args, cases, env, warm_env)
    finally:
        if not args.no_warm:
            launcher.stop(all_keys=True)  # the benchmark's own server (private NNI_XFER_HOME), by pid
    if not args.no_importtime:
        importtime_rows(cases, env, args.import_threshold)
    if not args.no_datasets:
        dataset_rows(dict(env, NNI_XFER_HOME=str(tmp / 'home-datasets')))


def importtime_rows(cases: list[dict], env: dict, threshold: float) -> None:
    """One ``python -X importtime -m nni_xfer.trial --spec`` per space (whole 0-epoch trial)."""
    print(f'import-time breakdown of the whole trial (python -X importtime; top-level imports >= {threshold:g} s, '
          f'cumulative; ! above 0.3 s):')
    p = subprocess.run([sys.executable, '-X', 'importtime', '-c', 'import torch, torchvision'], env=env,
                       cwd=str(ROOT), capture_output=True, text=True)
    print(f'  {"(bare import)":<16} ' + ', '.join(f'{n} {t:.2f}s' for n, t in import_roots(p.stderr, threshold)))
    for case in cases:
        p = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'nni_xfer.trial', '--spec', str(case['whole'])],
                           env=env, cwd=str(ROOT), capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f'{case["name"]}: the trial failed ({p.returncode}):\n{p.stderr[-3000:]}')
        roots = import_roots(p.stderr, threshold)
        print(f'  {case["name"]:<16} ' + ', '.join(f'{"!" if t > 0.3 else ""}{n} {t:.2f}s' for n, t in roots))


def share_rows(args, cases: list[dict], env: dict, warm_env: dict) -> None:
    """Whole 1-epoch trials, direct and warm: wall time (process start to exit) and the share of it
    that is not training."""
    names = [n for n in args.share_spaces.split(',') if n]
    chosen = [c for c in cases if c['name'] in names]
    if not chosen:
        return
    print('whole trial (1 epoch, evaluator train), wall time from process start to exit; set-up share = '
          '1 - train_seconds / wall')
    print(f'{"space":<16} {"direct wall":>11} {"train":>7} {"set-up share":>12} {"warm wall":>10} {"train":>7} '
          f'{"set-up share":>12}')
    for case in chosen:
        dw, dout = run_out([sys.executable, '-m', 'nni_xfer.trial', '--spec', str(case['spec'])], env)
        ww, wout = run_out([sys.executable, '-m', 'nni_xfer.launch', '--spec', str(case['spec'])], warm_env)
        dt, wt = final_metrics(dout)['train_seconds'], final_metrics(wout)['train_seconds']
        print(f'{case["name"]:<16} {dw:>9.2f} s {dt:>5.2f} s {1 - dt / dw:>12.2f} {ww:>8.2f} s {wt:>5.2f} s '
              f'{1 - wt / ww:>12.2f}')


if __name__ == '__main__':
    main()
