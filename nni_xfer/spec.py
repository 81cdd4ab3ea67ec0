"""The trial spec: everything a trial needs, carried by NNI as the trial's parameters.

A trial reads only files named in its spec and never opens the knowledge-store database.

What NNI carries (:meth:`TrialSpec.to_parameters`) is the spec's own keys plus
:data:`PORTAL_KEY`: a flat dict of the architecture's choices (one key per NNI label of a categorical
space) or readable summaries of a variable-length one, each a number or a short string, at most
:data:`PORTAL_SUMMARY_MAX` in all, the last the parent's NNI trial id (:data:`PARENT_KEY`). NNI's web
portal plots and lists only that dict when it is present (the key NNI's own NAS uses); the whole spec
stays in the parameters ("Original parameters" in a trial's row), so ``python -m nni_xfer.trial`` gets
everything it needs on every training service, without files.

What a trial reports to NNI as its final result is the few numbers of :data:`REPORTED_METRICS`
(:func:`reported_metrics`): with the summary, at most :data:`PORTAL_MAX_AXES` axes in the portal's
Hyper-parameter view. Every numeric metric and its strings (checkpoint path, sha256...) go to a JSON
*artifacts* file next to its checkpoint (:meth:`TrialSpec.artifacts_path`), which the tuner reads when
the result arrives and merges into what the strategy and the knowledge store get (:func:`with_artifacts`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: The parameters' key NNI's web portal shows instead of the whole parameters (NNI's NAS uses it).
PORTAL_KEY = 'mutation_summary'

#: Final-metric keys in the order the portal lists them; other numeric keys follow in their order.
METRIC_ORDER = ('default', 'val_acc', 'test_acc', 'accuracy', 'params', 'trainable_params', 'flops', 'mult_adds',
                'train_seconds', 'images_per_second', 'setup_seconds', 'trial_seconds', 'inherited_acc',
                'shared_fraction')


@dataclass
class TrialSpec:
    space: str
    architecture: dict
    dataset: str = 'digits'
    evaluator: str = 'train'
    space_args: dict = field(default_factory=dict)
    dataset_args: dict = field(default_factory=dict)
    evaluator_args: dict = field(default_factory=dict)
    init: dict = field(default_factory=lambda: {'kind': 'fresh'})
    seed: int = 0
    proposal_id: int = 0
    experiment_id: str = 'standalone'
    strategy: str | None = None
    parent: int | None = None
    checkpoint_root: str | None = None
    mode: str = 'maximize'

    @classmethod
    def from_dict(cls, d: dict) -> 'TrialSpec':
        if not isinstance(d, dict):
            raise ConfigError('trial spec', f'expected a dict, got {type(d).__name__}')
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k != PORTAL_KEY}
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ConfigError(f'trial spec.{unknown[0]}', 'unknown key', allowed=sorted(names))
        for required in ('space', 'architecture'):
            if required not in d:
                raise ConfigError(f'trial spec.{required}', 'missing')
        spec = cls(**d)
        if not isinstance(spec.init, dict) or 'kind' not in spec.init:
            raise ConfigError('trial spec.init', "expected a dict with a 'kind' key")
        return spec

    @classmethod
    def from_proposal(cls, proposal: Any, proposal_id: int, *, experiment_id: str, strategy: str | None,
                      space: str, dataset: str, evaluator: str, seed: int = 0, space_args: dict | None = None,
                      dataset_args: dict | None = None, evaluator_args: dict | None = None, mode: str = 'maximize',
                      checkpoint_root: str | None = None) -> 'TrialSpec':
        """The spec of a strategy's :class:`~nni_xfer.strategy.Proposal` (what every adapter sends).

        Each trial gets its own seed derived from the experiment seed; ``proposal.meta['evaluator_args']``
        overrides the experiment's evaluator arguments for this trial only.
        """
        return cls(space=space, architecture=proposal.architecture, dataset=dataset, evaluator=evaluator,
                   space_args=dict(space_args or {}), dataset_args=dict(dataset_args or {}),
                   evaluator_args={**(evaluator_args or {}), **proposal.meta.get('evaluator_args', {})},
                   init=proposal.init, seed=seed * 100003 + proposal_id, proposal_id=proposal_id,
                   experiment_id=experiment_id, strategy=strategy, parent=proposal.parent,
                   checkpoint_root=checkpoint_root, mode=mode)

    @classmethod
    def from_parameters(cls, params: Any) -> 'TrialSpec':
        """The spec in what NNI hands a trial: :meth:`to_parameters` output, an older plain spec dict,
        or either as a JSON string."""
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except ValueError as exc:
                raise ConfigError('trial spec', f'not JSON: {exc}') from exc
        return cls.from_dict(params)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_parameters(self, space: Any = None, parent_trial: str | None = None) -> dict[str, Any]:
        """What NNI carries to the trial: the spec plus the portal's summary (see the module doc).

        The summary ends with :data:`PARENT_KEY`: ``parent_trial``, the NNI trial id of the parent
        (``none`` without a parent; ``proposal <n>`` when its trial id is not known), so a lineage can
        be walked in the portal; the spec's ``parent`` keeps the parent's proposal number."""
        summary = portal_summary(self.architecture, space)
        if self.parent is None:
            summary[PARENT_KEY] = 'none'
        else:
            summary[PARENT_KEY] = _short(str(parent_trial)) if parent_trial else f'proposal {self.parent}'
        return {**self.to_dict(), PORTAL_KEY: summary}

    def checkpoint_path(self) -> Path:
        """Where the trial writes its checkpoint; relative to this process's default root when the
        spec names no ``checkpoint_root`` (a remote trial's default root is on its own machine)."""
        from .checkpoint import default_checkpoint_root
        root = Path(self.checkpoint_root) if self.checkpoint_root else default_checkpoint_root()
        return root / self.experiment_id / f'{self.proposal_id}.pt'

    def artifacts_path(self) -> Path:
        """The trial's artifacts file (checkpoint path, sha256, string results), next to its checkpoint."""
        return self.checkpoint_path().with_suffix('.json')


def proposal_id_of(params: Any) -> int | None:
    """The proposal id in a trial's NNI parameters (any form :meth:`TrialSpec.from_parameters` takes)."""
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            return None
    if isinstance(params, dict) and params.get('proposal_id') is not None:
        try:
            return int(params['proposal_id'])
        except (TypeError, ValueError):
            return None
    return None


# ---------------------------------------------------------------------------------------------
# what the web portal shows
# ---------------------------------------------------------------------------------------------

#: At most this many axes in NNI's Hyper-parameter view, which draws one per summary entry and one per
#: numeric key of the final result: the summary gets what :data:`REPORTED_METRICS` leaves.
PORTAL_MAX_AXES = 12
#: The final metrics NNI gets, one portal axis each: the objective; the accuracy the network had when it
#: started (its parent's weights, so a lineage's transfer shows beside ``parent_trial``); the size.
#: ``val_acc`` equals ``default`` but in ModuleNet (whose ``default`` is its paper score): store and report.
REPORTED_METRICS = ('default', 'inherited_acc', 'params')
#: At most this many entries in a portal summary: the architecture gets all but one, the lineage entry
#: the last (9: the built-in spaces' summaries have at most 8 architecture entries).
PORTAL_SUMMARY_MAX = PORTAL_MAX_AXES - len(REPORTED_METRICS)
#: The longest axis name or categorical value a summary passes on (longer ones overlap their
#: neighbours in the portal); a longer one is cut and a digest keeps distinct values distinct.
PORTAL_MAX_CHARS = 20
#: The summary's lineage entry: the NNI trial id of the trial's parent (``none`` without a parent).
PARENT_KEY = 'parent_trial'


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(',', ':'), default=str)


def _short(text: str) -> str:
    """``text`` itself when it fits :data:`PORTAL_MAX_CHARS`, else its head, ``~`` and a 6-digit digest."""
    if len(text) <= PORTAL_MAX_CHARS:
        return text
    import hashlib
    digest = hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]
    return text[:PORTAL_MAX_CHARS - 7] + '~' + digest


def _portal_value(value: Any) -> int | float | str:
    """A number or a short string: what the portal's axes can draw (never ``[object Object]``, never a
    JSON document)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else 'none'
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _short(value)
    return _short(_compact(value))


def default_portal_summary(architecture: Any) -> dict[str, int | float | str]:
    """The generic summary: every top-level choice that is a number or a string as itself, and for each
    list or dict its length (``<key>_count``). The whole architecture stays in the trial's parameters."""
    if not isinstance(architecture, dict):
        return {'architecture': _portal_value(architecture)}
    out: dict[str, Any] = {}
    for key, value in architecture.items():
        if value is None or isinstance(value, (bool, int, float, str)):
            out[str(key)] = _portal_value(value)
        elif isinstance(value, (list, tuple, dict)):
            out[f'{key}_count'] = len(value)
    return out


def _bounded(summary: dict) -> dict[str, int | float | str]:
    """At most ``PORTAL_SUMMARY_MAX - 1`` entries (the lineage entry is the last axis), short names and values."""
    out: dict[str, int | float | str] = {}
    for key, value in summary.items():
        if len(out) == PORTAL_SUMMARY_MAX - 1:
            break
        out[_short(str(key))] = _portal_value(value)
    return out


def portal_summary(architecture: Any, space: Any = None) -> dict[str, int | float | str]:
    """The flat, plottable summary of an architecture for NNI's web portal.

    A space may provide the ``portal_summary`` hook (nni_xfer/space.py; variable-length
    spaces: depth, layer counts, widths...); otherwise, or if it fails, :func:`default_portal_summary`.
    Whatever the source, the result has at most ``PORTAL_SUMMARY_MAX - 1`` entries, each a number or a
    string of at most :data:`PORTAL_MAX_CHARS` characters under a name no longer than that: one
    readable axis each. Values that are neither become compact JSON, shortened.
    """
    method = None
    if space is not None:  # the space protocol's hook (nni_xfer.space imports NNI: only when a space is given)
        from .space import space_hook
        method = space_hook(space, 'portal_summary', optional=True)
    if callable(method):
        try:
            summary = method(architecture)
            if isinstance(summary, dict):
                return _bounded(summary)
        except Exception as exc:  # noqa: BLE001 - a display summary never stops a search
            import logging
            logging.getLogger('nni_xfer.spec').warning('portal_summary of space %s failed (%s: %s); generic summary',
                                                       type(space).__name__, type(exc).__name__, exc)
    return _bounded(default_portal_summary(architecture))


# ---------------------------------------------------------------------------------------------
# final metrics: a few numbers for NNI, all of them and the strings in the artifacts file
# ---------------------------------------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric_metrics(metrics: dict) -> dict[str, int | float]:
    """The numeric entries of a metrics dict, ``default`` first then :data:`METRIC_ORDER`."""
    nums = {k: v for k, v in metrics.items() if _is_number(v)}
    ordered = {k: nums[k] for k in METRIC_ORDER if k in nums}
    ordered.update((k, v) for k, v in nums.items() if k not in ordered)
    return ordered


def reported_metrics(metrics: dict) -> dict[str, int | float]:
    """What a successful trial reports to NNI: its numeric entries of :data:`REPORTED_METRICS`, in that
    order. The others reach the strategy and the store through the artifacts file."""
    nums = numeric_metrics(metrics)
    return {k: nums[k] for k in REPORTED_METRICS if k in nums}


def non_numeric_metrics(metrics: dict) -> dict[str, Any]:
    """What :func:`numeric_metrics` leaves out (checkpoint path, sha256, ids as strings...)."""
    return {k: v for k, v in metrics.items() if not _is_number(v)}


def read_artifacts(spec: 'TrialSpec | dict', retries: int = 0, wait: float = 0.2) -> dict | None:
    """The artifacts a trial wrote next to its checkpoint, or ``None`` if this process cannot read
    them (not written, or a trial on another machine whose checkpoint root this one does not see).

    ``retries`` re-reads after ``wait`` seconds (a network filesystem may show the file late)."""
    import time
    if not isinstance(spec, TrialSpec):
        spec = TrialSpec.from_dict(spec)
    path = spec.artifacts_path()
    for attempt in range(retries + 1):
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            if attempt < retries:
                time.sleep(wait)
    return None


def with_artifacts(metrics: dict, artifacts: dict | None) -> dict:
    """The metrics a strategy and the store see: the reported numbers plus the trial's artifacts
    (``checkpoint``, ``sha256``, ``trial_id``, string results); a reported key wins."""
    merged = dict(metrics)
    for key, value in (artifacts or {}).items():
        merged.setdefault(key, value)
    return merged
