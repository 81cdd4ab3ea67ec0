"""Trial runner: ``python -m nni_xfer.trial`` (what every ``trialCommand`` runs).

Builds the model from space + sample, applies the initializer named in the spec, evaluates
(trains) it, writes its checkpoint atomically and its artifacts file (every metric, checkpoint path,
sha256) next to it, and reports a few final metrics to NNI (``nni_xfer.spec.REPORTED_METRICS``). The
same code runs inside ``NasExperiment`` through :func:`nas_evaluate`.

Standalone use (no NNI): ``python -m nni_xfer.trial --spec spec.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from typing import Any

# Trials on one CPU machine share its cores. OpenMP's default spin-waiting makes oversubscribed
# threads burn the cores the other trial needs: with two trials x 2 threads on 2 cores each took
# 5-15x as long as one trial alone, with passive waiting 1.7x (benchmarks/bench_cpu_threads.py).
# The policy only takes effect when set before torch loads OpenMP, i.e. in the
# ``python -m nni_xfer.trial`` process. A value the user exported wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
if __name__ == '__main__':  # ``-m nni_xfer.runtime.trial``; ``-m nni_xfer.trial`` does the same before importing this
    from nni_xfer.runtime.lightweight import trial_process
    trial_process()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from ..checkpoint import save_checkpoint
from ..errors import ConfigError
from ..registry import INITIALIZERS
from ..spec import TrialSpec, non_numeric_metrics, numeric_metrics, proposal_id_of, reported_metrics, with_artifacts


def error_line(exc: BaseException, limit: int = 500) -> str:
    """One line saying why a trial failed: the exception type and its message."""
    text = str(exc) if isinstance(exc, ConfigError) else f'{type(exc).__name__}: {exc}'
    line = ' '.join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + '...'


def failure_report(error: str, proposal_id: int | None = None) -> dict:
    """The final result a failing trial reports before it exits non-zero.

    It has no ``default`` key, so the web portal shows no value for the trial. NNI carries final
    results from every training service (local, remote, Kubernetes...) to the tuner, which records
    the line and the trial id in the failed store row.
    """
    report = {'status': 'FAILED', 'error': error}
    if proposal_id is not None:
        report['proposal_id'] = proposal_id
    trial_id = os.environ.get('NNI_TRIAL_JOB_ID')
    if trial_id:
        report['trial_id'] = trial_id
    return report


def trial_failure(metrics: Any) -> str | None:
    """The error line of a :func:`failure_report`, or ``None`` for real metrics."""
    if isinstance(metrics, dict) and metrics.get('status') == 'FAILED' and 'default' not in metrics:
        return str(metrics.get('error') or 'trial failed')
    return None


class _FaultOnPickle:
    """Raises while ``torch.save`` serialises it: a crash in the middle of writing a checkpoint."""

    def __init__(self, message: str):
        self.message = message

    def __reduce__(self):
        from ..training.evaluators import InjectedFault
        raise InjectedFault(self.message)


class Reporter:
    """Where a trial's results go. The default prints them (every numeric final metric)."""

    def intermediate(self, metrics: dict) -> None:
        print(f'[intermediate] {json.dumps(metrics)}', flush=True)

    def final(self, metrics: dict) -> None:
        """A successful trial's numeric final metrics."""
        print(f'[final] {json.dumps(metrics)}', flush=True)

    def failure(self, report: dict) -> None:
        """A failing trial's :func:`failure_report`."""
        self.final(report)


class NNIReporter(Reporter):
    def intermediate(self, metrics: dict) -> None:
        import nni
        nni.report_intermediate_result(metrics)

    def final(self, metrics: dict) -> None:
        """Only :data:`~nni_xfer.spec.REPORTED_METRICS`: NNI's Hyper-parameter view draws every numeric
        key as an axis. The search session takes the others from the trial's artifacts file."""
        import nni
        nni.report_final_result(reported_metrics(metrics))

    def failure(self, report: dict) -> None:
        import nni
        nni.report_final_result(report)


class TrialContext:
    """What initializers and evaluators may use: the spec, data, the space, reporting."""

    def __init__(self, spec: TrialSpec, reporter: Reporter, space: nn.Module | None = None):
        self.spec = spec
        self.reporter = reporter
        self._space = space
        self._splits = None
        self._info = None
        self._space_info = None
        out = os.environ.get('NNI_OUTPUT_DIR')
        self.log_dir = os.path.join(out, 'tensorboard') if out else None
        self._t0 = time.time()
        #: Metrics an initializer adds to the trial's final report (e.g. ``shared_fraction``).
        self.extra_metrics: dict = {}

    def dataset_info(self):
        if self._info is None:
            from ..data.pipeline import dataset_info
            self._info = dataset_info(self.spec.dataset, **self.spec.dataset_args)
        return self._info

    def splits(self):
        if self._splits is None:
            from ..data.pipeline import load_dataset
            self.progress(f'loading dataset {self.spec.dataset}')
            self._splits = load_dataset(self.spec.dataset, **self.spec.dataset_args)
        return self._splits

    def space(self) -> nn.Module:
        if self._space is None:
            from ..space import build_space
            self._space = build_space(self.spec.space, self.spec.space_args, self.dataset_info())
        return self._space

    def space_info(self):
        if self._space_info is None:
            from ..space import space_info
            self._space_info = space_info(self.spec.space, self.spec.space_args, self.space())
        return self._space_info

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def report_intermediate(self, metrics: dict) -> None:
        self.reporter.intermediate(metrics)

    def progress(self, message: str) -> None:
        print(f'[nni-xfer trial {self.spec.proposal_id} +{time.time() - self._t0:6.1f}s] {message}', flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def run_trial(spec: dict | TrialSpec, model: nn.Module | None = None, reporter: Reporter | None = None,
              space: nn.Module | None = None) -> dict:
    """Run one trial end to end and return (and report) its final metrics."""
    t_start = time.time()
    if not isinstance(spec, TrialSpec):
        spec = TrialSpec.from_parameters(spec)
    reporter = reporter or Reporter()
    ctx = TrialContext(spec, reporter, space=space)
    initializer = INITIALIZERS.get(spec.init['kind'], field='init.kind')
    from ..training.evaluators import InjectedFault, make_evaluator
    evaluator, fault = make_evaluator(spec.evaluator, spec.evaluator_args)
    fault_at = fault.draw(spec.proposal_id)

    def injected(point: str) -> InjectedFault:
        return InjectedFault(f'injected fault at {point} (evaluator_args.fault, seed {fault.seed}, '
                             f'proposal {spec.proposal_id})')

    if fault_at == 'start':
        raise injected('start')
    seed_everything(spec.seed)
    if model is None:
        from ..space import freeze
        model = freeze(ctx.space(), spec.architecture)
    ctx.progress(f'architecture {json.dumps(spec.architecture)}; init {spec.init["kind"]}')
    initializer(model, spec.init, ctx)
    t_ready = time.time()
    if fault_at == 'mid_train':
        def report_then_fail(metrics: dict) -> None:
            reporter.intermediate(metrics)
            raise injected('mid_train')
        ctx.report_intermediate = report_then_fail
    metrics = evaluator.evaluate(model, ctx)
    if fault_at == 'mid_train':  # the evaluator reports no epochs: fail once it is done
        raise injected('mid_train')
    metrics.update({k: v for k, v in ctx.extra_metrics.items() if k not in metrics})
    if 'default' not in metrics:
        raise RuntimeError(f"evaluator {spec.evaluator!r} returned no 'default' metric")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if fault_at == 'checkpoint_write':
        state['~fault'] = _FaultOnPickle(str(injected('checkpoint_write')))
    # Metadata as plain JSON types so the file loads with torch.load(weights_only=True).
    meta = json.loads(json.dumps({
        'space': spec.space,
        'space_args': spec.space_args,
        'architecture': spec.architecture,
        'dataset': spec.dataset,
        'metrics': {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
    }, default=str))
    uri, sha = save_checkpoint({'state_dict': state, **meta}, spec.checkpoint_path())
    metrics.update({'setup_seconds': t_ready - t_start, 'trial_seconds': time.time() - t_start})
    # NNI gets a few numbers (its portal draws every numeric key as an axis: NNIReporter); every metric
    # and the strings go to the artifacts file next to the checkpoint, which the search session reads
    # when the result arrives and merges into what the strategy and the store get. NasExperiment keeps
    # only a final result's 'default' (nni_xfer/session.py).
    artifacts = {**numeric_metrics(metrics), 'checkpoint': uri, 'sha256': sha, 'proposal_id': spec.proposal_id,
                 **non_numeric_metrics(metrics)}
    trial_id = os.environ.get('NNI_TRIAL_JOB_ID')
    if trial_id:
        artifacts['trial_id'] = trial_id
    write_artifacts(spec, artifacts)
    ctx.progress(f"final {spec.evaluator} metrics: default {metrics['default']:.4f}; checkpoint {uri}")
    reporter.final(numeric_metrics(metrics))
    return with_artifacts(numeric_metrics(metrics), artifacts)


def write_artifacts(spec: TrialSpec, artifacts: dict) -> None:
    """Write the trial's artifacts file atomically (temp file + rename) next to its checkpoint."""
    path = spec.artifacts_path()
    tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(artifacts, f, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def nas_evaluate(model: nn.Module, spec: dict) -> None:
    """FunctionalEvaluator entry for ``NasExperiment``: the model is built by NNI from the sample.

    A failure reports :func:`failure_report` (the strategy adapter records its line) and re-raises.
    """
    reporter = NNIReporter()
    try:
        run_trial(spec, model=model, reporter=reporter)
    except Exception as exc:
        reporter.failure(failure_report(error_line(exc), proposal_id_of(spec)))
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m nni_xfer.trial', description=__doc__.splitlines()[0])
    parser.add_argument('--spec', help='run a spec from a JSON file instead of asking NNI')
    args = parser.parse_args(argv)
    params = None
    try:
        if args.spec:
            with open(args.spec) as f:
                run_trial(json.load(f))
        else:
            import nni
            params = nni.get_next_parameter()
            if params is None:
                raise ConfigError('trial', 'NNI gave no parameters (is this running under nnictl?)')
            run_trial(params, reporter=NNIReporter())
    except Exception as exc:
        if not isinstance(exc, ConfigError):
            traceback.print_exc()
        line = error_line(exc)
        if params is not None:  # under NNI: the tuner records this line and the trial id
            try:
                NNIReporter().failure(failure_report(line, proposal_id_of(params)))
            except Exception as report_exc:  # noqa: BLE001 - the exit code still says FAILED
                print(f'nni-xfer: could not report the failure to NNI: {report_exc}', file=sys.stderr)
        print(f'nni-xfer trial failed: {line}', file=sys.stderr, flush=True)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
