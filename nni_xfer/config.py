"""The tuner's ``classArgs``: validation and construction of space, strategy and evaluator.

The same validation runs in ``nni-xfer check`` and when the tuner starts, before any trial.
"""
from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, check_number  # noqa: F401  (check_number: the validator of every number)
from .registry import DATASETS, EVALUATORS, STRATEGIES
from .strategy import MODES, BaseStrategy, SpaceInfo, StrategyContext


def non_finite_numbers(value: Any, field: str) -> list[ConfigError]:
    """Every NaN or infinite number anywhere in ``value`` (nested mappings and lists), one error each:
    run on all of ``classArgs`` before any plugin sees it, so no argument of any strategy, space,
    evaluator or dataset can be non-finite, whether or not its own validation checks."""
    if isinstance(value, float) and not math.isfinite(value):
        return [ConfigError(field, f'expected a finite number, got {value!r}')]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in non_finite_numbers(v, f'{field}.{k}')]
    if isinstance(value, (list, tuple)):
        return [e for i, v in enumerate(value) for e in non_finite_numbers(v, f'{field}[{i}]')]
    return []


@dataclass
class XferConfig:
    """Validated ``classArgs`` of :class:`~nni_xfer.tuner.XferTuner`."""

    strategy: str
    space: str
    strategy_args: dict = field(default_factory=dict)
    space_args: dict = field(default_factory=dict)
    dataset: str = 'digits'  # DEFAULT_DATASET
    dataset_args: dict = field(default_factory=dict)
    evaluator: str = 'train'
    evaluator_args: dict = field(default_factory=dict)
    seed: int = 0
    mode: str = 'maximize'
    store: str | None = None
    checkpoint_root: str | None = None

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


_TYPES = {
    'strategy': str, 'space': str, 'dataset': str, 'evaluator': str,
    'strategy_args': dict, 'space_args': dict, 'dataset_args': dict, 'evaluator_args': dict,
    'seed': int, 'mode': str, 'store': (str, type(None)), 'checkpoint_root': (str, type(None)),
}
_REQUIRED = ('strategy', 'space')


#: what ``classArgs.dataset`` is when an exp.yml leaves it out (README, exp.yml walk-through): scikit-learn's
#: 8x8 digits ships with the install, so a first config runs without a download. ``nni-xfer check`` says so.
DEFAULT_DATASET = 'digits'


def _key_errors(args: Any, fixed_strategy: str | None) -> list[ConfigError]:
    """Problems of the keys and value types of ``classArgs`` and every non-finite number in it: found
    without importing a plugin (so without torch)."""
    if not isinstance(args, dict):
        return [ConfigError('classArgs', f'expected a mapping, got {type(args).__name__}')]
    errors = []
    allowed = XferConfig.keys()
    for key in args:
        if key not in allowed:
            errors.append(ConfigError(f'classArgs.{key}', 'unknown key', allowed=allowed))
    for key in _REQUIRED:
        if key == 'strategy' and fixed_strategy is not None:
            continue
        if key not in args:
            errors.append(ConfigError(f'classArgs.{key}', 'missing required argument'))
    if fixed_strategy is not None and args.get('strategy', fixed_strategy) != fixed_strategy:
        errors.append(ConfigError('classArgs.strategy', f'this tuner runs {fixed_strategy!r} only',
                                  allowed=[fixed_strategy]))
    for key, typ in _TYPES.items():
        if key in args and (not isinstance(args[key], typ) or isinstance(args[key], bool)):
            want = typ.__name__ if isinstance(typ, type) else ' or '.join(t.__name__ for t in typ)
            want = want.replace('NoneType', 'null').replace('dict', 'mapping').replace('str', 'string') \
                .replace('int', 'integer')
            errors.append(ConfigError(f'classArgs.{key}', f'expected {want}, got {type(args[key]).__name__}'))
    if isinstance(args.get('mode'), str) and args['mode'] not in MODES:
        errors.append(ConfigError('classArgs.mode', f"unknown mode {args['mode']!r}", allowed=MODES))
    errors += non_finite_numbers({k: v for k, v in args.items() if k in allowed}, 'classArgs')
    return errors


def _name_errors(args: dict) -> list[ConfigError]:
    """Unknown strategy, space, dataset or evaluator names (loads the plugin registries)."""
    from .registry import SEARCH_SPACES
    errors = []
    for key, reg in (('strategy', STRATEGIES), ('space', SEARCH_SPACES), ('dataset', DATASETS),
                     ('evaluator', EVALUATORS)):
        if isinstance(args.get(key), str) and args[key] not in reg:
            errors.append(ConfigError(f'classArgs.{key}', f'unknown {reg.kind} {args[key]!r}', allowed=reg.names()))
    return errors


def _shallow_errors(args: Any, fixed_strategy: str | None) -> list[ConfigError]:
    return _key_errors(args, fixed_strategy) or _name_errors(args)


def _prefix(exc: ConfigError) -> ConfigError:
    if exc.field.startswith('classArgs'):
        return exc
    return ConfigError(f'classArgs.{exc.field}', exc.message, exc.allowed)


@dataclass
class Built:
    config: XferConfig
    space: Any
    space_info: SpaceInfo
    strategy: BaseStrategy
    dataset_info: Any


def validate_class_args(args: Any, fixed_strategy: str | None = None) -> tuple[list[ConfigError], Built | None]:
    """Every problem of ``classArgs`` (one :class:`ConfigError` each) and, if none, the built objects.

    Problems of keys, types and non-finite numbers are answered first, without loading a plugin;
    when there are none, every problem of the names and of the dataset's, evaluator's, space's and
    strategy's arguments (a part that cannot be built because another failed is still checked for
    unknown and missing arguments)."""
    errors = _key_errors(args, fixed_strategy)
    if errors:
        return errors, None
    errors = _name_errors(args)
    bad_names = {e.field.split('.', 1)[1] for e in errors}
    args = dict(args)
    if fixed_strategy is not None:
        args.setdefault('strategy', fixed_strategy)
    cfg = XferConfig(**args)
    try:  # the knowledge store: a valid setting, and an existing store that passes its check (reads only)
        from .store import check_store
        check_store(cfg.store)
    except ConfigError as exc:
        errors.append(_prefix(exc))
    dataset_info = space = info = strategy = None
    if 'dataset' not in bad_names:
        from .data.pipeline import dataset_info as _dataset_info
        try:
            dataset_info = _dataset_info(cfg.dataset, **cfg.dataset_args)
        except ConfigError as exc:
            exc = exc if exc.field != 'dataset' else ConfigError('dataset_args', exc.message, exc.allowed)
            errors += _every_error(lambda a: _dataset_info(cfg.dataset, **a), cfg.dataset_args, 'dataset_args', exc)
    if 'evaluator' not in bad_names:
        from .training.evaluators import make_evaluator  # evaluator_args.fault is the trial runner's, any evaluator
        try:
            make_evaluator(cfg.evaluator, cfg.evaluator_args)
        except ConfigError as exc:
            errors += _every_error(lambda a: make_evaluator(cfg.evaluator, a), cfg.evaluator_args,
                                   'evaluator_args', exc)
        except TypeError as exc:
            errors.append(ConfigError('classArgs.evaluator_args', str(exc)))
    if 'space' not in bad_names:
        if dataset_info is not None:
            from .space import build_space, space_info
            try:
                space = build_space(cfg.space, cfg.space_args, dataset_info)
                info = space_info(cfg.space, cfg.space_args, space)
            except ConfigError as exc:
                errors += _every_error(lambda a: build_space(cfg.space, a, dataset_info), cfg.space_args,
                                       'space_args', exc)
        else:
            errors += [_prefix(e) for e in space_arg_errors(cfg.space, cfg.space_args)]
    if 'strategy' not in bad_names:
        if info is not None:
            context = StrategyContext(store=cfg.store, dataset=cfg.dataset, dataset_args=dict(cfg.dataset_args))

            def _strategy(a):
                return make_strategy(cfg.strategy, info, a, seed=cfg.seed, mode=cfg.mode, context=context)
            try:
                strategy = _strategy(cfg.strategy_args)
            except ConfigError as exc:
                errors += _every_error(_strategy, cfg.strategy_args, 'strategy_args', exc)
        else:
            errors += [_prefix(e) for e in strategy_arg_errors(cfg.strategy, cfg.strategy_args)]
    if errors:
        return errors, None
    return [], Built(cfg, space, info, strategy, dataset_info)


def _every_error(build, args: dict, section: str, first: ConfigError, limit: int = 10) -> list[ConfigError]:
    """``first`` and the problems of the section's other keys: a plugin's constructor raises at its first
    bad argument, so the key it named is left out (its default used) and the part built again, while
    the next problem names another key the user set (one that names a left-out key may come from the
    default standing in for it, and ends the search)."""
    def key_of(exc: ConfigError) -> str | None:
        field = exc.field[len('classArgs.'):] if exc.field.startswith('classArgs.') else exc.field
        if not field.startswith(section + '.'):
            return None
        import re
        return re.split(r'[.\[]', field[len(section) + 1:], maxsplit=1)[0]

    errors, rest = [first], dict(args)
    for _ in range(limit):
        key = key_of(errors[-1])
        if key is None or key not in rest:
            break
        rest.pop(key)
        try:
            build(rest)
            break
        except ConfigError as exc:
            if key_of(exc) not in rest:
                break
            errors.append(exc)
        except Exception:  # noqa: BLE001 - a part built without a key may fail otherwise: nothing more to say
            break
    return [_prefix(e) for e in errors]


def space_arg_errors(name: str, space_args: dict) -> list[ConfigError]:
    """Unknown ``space_args`` keys of space ``name`` (from its signature; nothing is built)."""
    from .registry import SEARCH_SPACES
    from .space import DATASET_ARGS, space_arg_names
    allowed = space_arg_names(SEARCH_SPACES.get(name, field='space'))
    errors = []
    for key in space_args:
        if key in DATASET_ARGS:
            errors.append(ConfigError(f'space_args.{key}', 'is set from the dataset; remove it'))
        elif key not in allowed:
            errors.append(ConfigError(f'space_args.{key}', f'unknown argument of space {name!r}',
                                      allowed=[a for a in allowed if a not in DATASET_ARGS]))
    return errors


def strategy_arg_errors(name: str, strategy_args: dict) -> list[ConfigError]:
    """Every unknown, reserved or missing ``strategy_args`` key of strategy ``name`` (from its
    signature; nothing is built)."""
    cls = STRATEGIES.get(name, field='strategy')
    sig = inspect.signature(cls.__init__)
    params = [n for n, p in sig.parameters.items() if n not in ('self', 'space', 'seed', 'mode', 'context')
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    errors = []
    for key in strategy_args:
        if key in ('seed', 'mode', 'context'):
            errors.append(ConfigError(f'strategy_args.{key}', 'is set from classArgs (store, dataset)'
                                      if key == 'context' else f'set classArgs.{key} instead'))
        elif key not in params:
            errors.append(ConfigError(f'strategy_args.{key}', f'unknown argument of strategy {name!r}',
                                      allowed=params))
    for n in params:
        if sig.parameters[n].default is inspect.Parameter.empty and n not in strategy_args:
            errors.append(ConfigError(f'strategy_args.{n}', f'missing required argument of strategy {name!r}'))
    return errors


def make_strategy(name: str, info: SpaceInfo, strategy_args: dict, seed: int = 0, mode: str = 'maximize',
                  context: StrategyContext | None = None) -> BaseStrategy:
    """Construct a registered strategy; unknown or ill-typed arguments → :class:`ConfigError`.

    A strategy whose ``__init__`` takes ``context`` gets the :class:`StrategyContext` (store, dataset)."""
    errors = strategy_arg_errors(name, strategy_args) + non_finite_numbers(strategy_args, 'strategy_args')
    if errors:
        raise errors[0]
    cls = STRATEGIES.get(name, field='strategy')
    extra = {'context': context or StrategyContext()} if 'context' in inspect.signature(cls.__init__).parameters \
        else {}
    return cls(info, seed=seed, mode=mode, **strategy_args, **extra)


def build(args: Any, fixed_strategy: str | None = None) -> Built:
    """Validate and build; raise the first problem as a one-line :class:`ConfigError`."""
    errors, built = validate_class_args(args, fixed_strategy)
    if errors:
        raise errors[0]
    assert built is not None
    return built


TUNER_CLASS = 'nni_xfer.tuner.XferTuner'
BUILTIN_PREFIX = 'xfer_'


def fixed_strategy_of(tuner: dict) -> tuple[bool, str | None]:
    """(is this our tuner?, strategy fixed by a registered name)."""
    cls = tuner.get('className') or tuner.get('class_name')
    name = tuner.get('name')
    if isinstance(cls, str):
        if cls == TUNER_CLASS:
            return True, None
        if cls.startswith(TUNER_CLASS + '_'):
            return True, cls[len(TUNER_CLASS) + 1:]
    if isinstance(name, str) and name.lower().startswith(BUILTIN_PREFIX):
        return True, name[len(BUILTIN_PREFIX):]
    return False, None


def _nni_schema_problem(exc: BaseException, raw: dict) -> str:
    """One line for an error of NNI's own config validation, naming the exp.yml key when NNI only
    raised a bare ``assert self.<field> ...``."""
    import re
    import traceback
    msg = ' '.join(str(exc).split())
    if msg:
        return f'NNI schema: {msg}'
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    m = re.match(r'assert\s+self\.(\w+)\s*(.*)$', (frame.line or '').strip())
    if m:
        key = re.sub(r'_(\w)', lambda g: g.group(1).upper(), m.group(1))   # trial_concurrency -> trialConcurrency
        shown = f' {raw[key]!r}' if key in raw else ''
        return f'{key}:{shown} is not allowed (NNI requires {m.group(1)} {m.group(2)})'
    return f'NNI schema: {type(exc).__name__} in {Path(frame.filename).name}: {frame.line}'


def check_config(path: str | os.PathLike, notes: list[str] | None = None) -> list[str]:
    """Problems of an ``exp.yml``: NNI's schema, then our tuner's ``classArgs``; one line each, all of
    them in one run. A YAML error or a problem of the ``classArgs`` keys is answered without loading a
    plugin (or torch). ``notes`` (if given) receives what a valid config leaves to defaults worth
    knowing (the dataset when ``classArgs.dataset`` is not set)."""
    import yaml
    problems: list[str] = []
    path = Path(path)
    if not path.is_file():
        return ['no such file']
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = f'line {mark.line + 1}, column {mark.column + 1}: ' if mark is not None else ''
        what = getattr(exc, 'problem', None) or str(exc).splitlines()[0]
        return [f'not valid YAML: {where}{what}']
    except (OSError, UnicodeDecodeError) as exc:
        return [f'cannot read: {exc}']
    if not isinstance(raw, dict):
        return ['expected a mapping at the top level']
    try:
        from nni.experiment.config import ExperimentConfig
        config = ExperimentConfig.load(str(path))
        config.validate()
    except Exception as exc:  # NNI raises ValueError/AssertionError/TypeError, some without a message
        problems.append(_nni_schema_problem(exc, raw))
    tuner = raw.get('tuner')
    if not isinstance(tuner, dict):
        problems.append('tuner: missing (allowed: className: nni_xfer.tuner.XferTuner, or name: xfer_<strategy>)')
        return problems
    ours, fixed = fixed_strategy_of(tuner)
    if not ours:
        problems.append(f'tuner: not an nni-xfer tuner (allowed: className: {TUNER_CLASS}, '
                        f'or name: {BUILTIN_PREFIX}<strategy>)')
        return problems
    class_args = tuner.get('classArgs', {}) or {}
    key_errors = _key_errors(class_args, fixed)
    if key_errors:  # answered without loading the plugins (torch)
        return problems + [f'tuner.{e}' for e in key_errors]
    if fixed is not None and fixed not in STRATEGIES:
        problems.append(str(ConfigError('tuner.name', f'unknown strategy {fixed!r}',
                                        allowed=[BUILTIN_PREFIX + n for n in STRATEGIES.names()])))
        return problems
    errors, _ = validate_class_args(class_args, fixed)
    problems.extend(f'tuner.{e}' for e in errors)
    if notes is not None and not problems and 'dataset' not in class_args:
        notes.append(f'classArgs.dataset not set: searching the default dataset {DEFAULT_DATASET!r}')
    return problems
