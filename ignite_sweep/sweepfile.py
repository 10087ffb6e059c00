"""Sweep files: read a W&B sweep YAML and prove it can run before anything is registered.

The schema is W&B's own (the ``sweeps`` engine's). In a sweep of the built-in trainer, hyperparameter names and
values are TrainConfig's; a program sweep (its own ``program`` or ``command``) names its own. A sweep
is refused at ``create`` (one line: the file, the key path, what is allowed) when the schema says no, when a
value a parameter can take is not a valid hyperparameter, or when the engine itself cannot run it (a dry
``next_run`` plus a handful of seeded suggestions, each built into a TrainConfig).

``method: custom`` (``scheduler: {engine: optuna}``) is checked by the Optuna engine (``search.optuna_engine``): the
distributions it can sample, the ``source`` file (relative to the sweep file; its text is kept in the stored
config) and a dry run of its ``optimizer`` and ``search_space``, whose suggestions are checked as above.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ignite_sweep.errors import ConfigError, IgniteSweepError
from ignite_sweep.training.config import LOGGED_METRICS, TrainConfig, unknown_key_message

SWEEP_COMMAND = ["${env}", "${interpreter}", "-m", "ignite_sweep.train", "${args}"]
METHODS = ("grid", "random", "bayes", "custom")
SCHEDULER_KEPT = ("source_code", "source_file")
"""What ``create`` adds to a custom sweep's ``scheduler`` (not W&B's keys): the source file's text and path."""
_RANGE_DISTRIBUTIONS = ("uniform", "int_uniform", "q_uniform", "log_uniform_values", "q_log_uniform_values")
DRY_RUN_SUGGESTIONS = 20
"""How many seeded suggestions `create` draws from the engine and builds into a TrainConfig."""
MAX_GRID_POINTS = 1_000_000
TAIL = 1e-6
"""Quantiles checked on either side of a distribution: a value drawn once in a million runs still must run."""
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def load_sweep(path: str | os.PathLike[str], warn: Callable[[str], None] | None = None,
               for_function: bool = False) -> dict[str, Any]:  # fmt: skip
    """Read a W&B sweep YAML file and validate it (see ``validate_sweep``)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "expected a W&B sweep YAML"
        ) from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    return validate_sweep(config, str(path), warn=warn, for_function=for_function, folder=Path(path).parent)


def validate_sweep(config: Any, source: str = "sweep config", warn: Callable[[str], None] | None = None,
                   for_function: bool = False, folder: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Check a sweep config against W&B's schema and TrainConfig, then dry-run the engine on it; returns it
    with a ``command`` added. ``warn`` gets what W&B accepts with a warning (deprecated distributions).
    ``for_function`` (the Python API's ``sweep``): parameters that are not TrainConfig's make a sweep for a
    user function, checked as W&B checks them and registered without a command. ``folder``: where a custom
    sweep's ``scheduler.source`` is (the sweep file's folder; default the current one).

    Errors are one line: the file, the key, what is allowed.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping with method, metric and parameters")
    method = config.get("method")
    if method not in METHODS:
        raise ConfigError(f"{source}: key 'method': got {method!r}, allowed: {' | '.join(METHODS)}")
    custom: list[dict[str, Any]] | None = None  # a custom sweep's dry-run configs
    if method == "custom":
        config, custom = _validate_custom(config, source, warn, folder or Path.cwd())
    elif config.get("scheduler") is not None:
        _check_wandb_scheduler(config, source)
    parameters = config.get("parameters")
    if custom is not None and (parameters is None or parameters == {}):  # the search space is its function's
        parameters = {}
    elif not isinstance(parameters, dict) or not parameters:
        raise ConfigError(f"{source}: key 'parameters': needs at least one hyperparameter")
    if is_program_sweep(config):
        return _validate_program_sweep(config, source, warn, custom=custom)
    if for_function and "command" not in config:  # the built-in trainer's sweep if it is one, else the function's
        metric_names = [m["name"] for m in _metrics(config)] or ["val/accuracy"]
        names = list(parameters) + [n for c in custom or [] for n in c]
        user_factory = any(":" in str(v) for k in ("model", "dataset") for v in _spec_values(parameters.get(k)))
        builtin = all(str(n) in _FIELDS for n in names) or user_factory
        if builtin and all(name in LOGGED_METRICS for name in metric_names):
            return validate_sweep(config, source, warn, folder=folder)  # its errors are the user's to see
        return _validate_program_sweep(config, source, warn, program=False, custom=custom)
    own = [str(n) for n in parameters if n not in _FIELDS]  # a user factory's, else unknown
    taken, takes_any = _user_factory_parameters(parameters, source) if own else (set(), False)
    for name, spec in parameters.items():
        if name not in _FIELDS and not takes_any and name not in taken:
            names = sorted(f for f in _FIELDS if f != "factory_args") + sorted(taken)
            raise ConfigError(f"{source}: {unknown_key_message(str(name), names, what='parameter')}")
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{source}: key 'parameters.{name}': expected a mapping such as {{value: ...}} or {{values: [...]}}"
            )
    _check_schema(config, source, warn)
    for key, metric in _metrics(config, keyed=True):
        name = metric.get("name")
        if name not in LOGGED_METRICS:
            close = difflib.get_close_matches(str(name), list(LOGGED_METRICS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: key '{key}.name': got {name!r}, allowed: {' | '.join(LOGGED_METRICS)}{hint}")
    _check_needs_metric(config, source)
    try:
        _check_values(config)
        _dry_run(config) if custom is None else _check_custom(custom)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    result = dict(config)
    result.setdefault("command", list(SWEEP_COMMAND))
    return result


def _spec_values(spec: Any) -> list[Any]:
    """The values a parameter spec names (value or values); none for a distribution."""
    spec = spec if isinstance(spec, dict) else {}
    return [spec.get("value")] if "value" in spec else list(spec.get("values") or [])


def _user_factory_parameters(parameters: dict[str, Any], source: str) -> tuple[set[str], bool]:
    """(the parameters the sweep's user model/dataset factories take by name, whether one takes ``**kwargs``)."""
    from ignite_sweep.training.config import factories_take

    taken: set[str] = set()
    takes_any = False
    for kind in ("model", "dataset"):
        specs = [(kind, v) for v in _spec_values(parameters.get(kind)) if isinstance(v, str) and ":" in v]
        try:
            kind_takes, kind_takes_any = factories_take(specs)
        except IgniteSweepError as exc:
            raise ConfigError(f"{source}: key 'parameters.{kind}': {exc}") from None
        taken |= kind_takes
        takes_any |= kind_takes_any
    return taken, takes_any


def is_program_sweep(config: dict[str, Any]) -> bool:
    """A sweep of the user's own program: its ``program`` or ``command`` names something other than ignite-sweep's
    built-in trainer (``-m ignite_sweep.train``). Parameters are then the program's own, as W&B allows them."""
    command = config.get("command")
    if isinstance(command, list) and command:
        return "ignite_sweep.train" not in [str(c) for c in command]
    return config.get("program") is not None


def _validate_program_sweep(config: dict[str, Any], source: str, warn: Callable[[str], None] | None,
                            program: bool = True, custom: list[dict[str, Any]] | None = None
                            ) -> dict[str, Any]:  # fmt: skip
    """W&B's schema and the engine's dry run; names and values are the program's, so nothing more to check."""
    _check_schema(config, source, warn)
    command = config.get("command")
    if command is not None and (not isinstance(command, list) or not command):
        raise ConfigError(f"{source}: key 'command': expected a list such as "
                          "[${env}, ${interpreter}, ${program}, ${args}]")  # fmt: skip
    uses_program = program and (command is None or "${program}" in [str(c) for c in command])
    if uses_program and not config.get("program"):
        raise ConfigError(f"{source}: key 'program': the command runs ${{program}}; name the script to run")
    if uses_program and not Path(str(config["program"])).exists():
        (warn or _warn)(f"{source}: program {config['program']!r} is not in {os.getcwd()}: agents run it from the "
                        "folder they start in, as wandb agent does")  # fmt: skip
    _check_needs_metric(config, source)
    if custom is not None:  # the Optuna engine's dry run is done
        return dict(config)
    try:
        _dry_run(config, check=False)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return dict(config)


def _metrics(config: dict[str, Any], keyed: bool = False) -> list[Any]:
    """The sweep's objectives: ``metric``, or each of a custom sweep's ``metrics:`` (with ``keyed``: (key, metric))."""
    if isinstance(config.get("metrics"), list):
        found = [(f"metrics.{i}", m) for i, m in enumerate(config["metrics"]) if isinstance(m, dict)]
    else:
        found = [("metric", config["metric"])] if isinstance(config.get("metric"), dict) else []
    return found if keyed else [m for _, m in found]


def _validate_custom(config: dict[str, Any], source: str, warn: Callable[[str], None] | None,
                     folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """``method: custom``: W&B's schema, then the engine ``scheduler.engine`` names (Optuna: its own checks and a
    dry run, ``search.optuna_engine.check_sweep``). Returns (the config to store, the dry run's configs)."""
    _check_schema(config, source, warn)
    scheduler = config.get("scheduler")
    if not isinstance(scheduler, dict):
        raise ConfigError(f"{source}: key 'scheduler': method custom needs scheduler: {{engine: optuna}} "
                          "(and optionally source, optimizer, search_space)")  # fmt: skip
    engine = scheduler.get("engine")
    if engine != "optuna":
        raise ConfigError(f"{source}: key 'scheduler.engine': {engine} is not supported here; supported: optuna "
                          "(method: custom), wandb (method: grid | random | bayes)")  # fmt: skip
    if not _metrics(config):
        raise ConfigError(f"{source}: key 'metric': method custom needs a metric (or metrics:) for Optuna to "
                          "optimise")  # fmt: skip
    from ignite_sweep.search.optuna_engine import check_sweep

    try:
        return check_sweep(config, folder, warn)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _check_wandb_scheduler(config: dict[str, Any], source: str) -> None:
    """``scheduler`` with W&B's methods: ``engine: wandb`` is W&B's own engine (today's); nothing else to give."""
    scheduler = config["scheduler"]
    if not isinstance(scheduler, dict):
        return  # the schema's to explain
    engine = scheduler.get("engine")
    if engine in ("optuna", "ax"):
        raise ConfigError(f"{source}: key 'scheduler.engine': {engine} needs method: custom (got method "
                          f"{config['method']}); supported: optuna (method: custom), wandb (method: grid | random | "
                          "bayes)")  # fmt: skip
    extra = [k for k in ("source", "optimizer", "search_space") if k in scheduler]
    if engine == "wandb" and extra:
        raise ConfigError(f"{source}: key 'scheduler.{extra[0]}': engine wandb takes no {extra[0]}; it is for "
                          "engine: optuna with method: custom")  # fmt: skip


def _check_custom(configs: list[dict[str, Any]]) -> None:
    """The Optuna engine's dry-run suggestions, each built into a TrainConfig."""
    for i, values in enumerate(configs):
        _check(values, f" (Optuna's suggestion {i + 1} of {len(configs)})")


def _check_schema(config: dict[str, Any], source: str, warn: Callable[[str], None] | None) -> None:
    """W&B's schema: a violation is one line; what W&B accepts with a warning goes to ``warn``."""
    from ignite_sweep.sweep_schema import schema_problems

    scheduler = config.get("scheduler")
    if isinstance(scheduler, dict) and any(k in scheduler for k in SCHEDULER_KEPT):  # ours, added at create
        config = {**config, "scheduler": {k: v for k, v in scheduler.items() if k not in SCHEDULER_KEPT}}

    problems, deprecated = schema_problems(config)
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")
    for message in deprecated:
        (warn or _warn)(f"{source}: {message}")


def _check_needs_metric(config: dict[str, Any], source: str) -> None:
    metric = config.get("metric")
    if metric is None and (config["method"] == "bayes" or "early_terminate" in config):
        raise ConfigError(f"{source}: key 'metric': method {config['method']} and early_terminate need a metric "
                          "to optimise")  # fmt: skip


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, stacklevel=3)


def _check(values: dict[str, Any], how: str = "") -> None:
    """values -> TrainConfig, or a ConfigError naming the sweep key (``key 'parameters.lr': got ...``)."""
    try:
        TrainConfig.from_dict(values)
    except ConfigError as exc:
        message = str(exc).replace("hyperparameter '", "key 'parameters.", 1)
        raise ConfigError(message + how) from None


def _engine_parameter(name: str, spec: dict[str, Any]) -> Any:
    from ignite_sweep.engine import sweeps_engine

    sweeps_engine()
    from sweeps.params import HyperParameter

    return HyperParameter(name, spec)


def _kind(spec: dict[str, Any]) -> str:
    if "distribution" in spec:
        return f"distribution {spec['distribution']}"
    if "probabilities" in spec:
        return "values with probabilities"
    return next((k for k in ("value", "values") if k in spec), "min/max")


def _check_values(config: dict[str, Any]) -> None:
    """Every value a parameter can take is a valid hyperparameter: its values, its bounds, and its
    distribution's far tails; integer, boolean and string hyperparameters get only what they can hold."""
    from ignite_sweep.engine import plain

    parameters = config.get("parameters") or {}
    fixed = {k: v["value"] for k, v in parameters.items() if "value" in v}
    _check(fixed)
    grid = config["method"] == "grid"
    for name, spec in parameters.items():
        if name not in _FIELDS:  # a user factory's own: its values are checked in the dry run, with the rest
            continue
        param = _engine_parameter(name, spec)
        kind = param.type.removeprefix("param_")
        typ = _FIELDS[name].type
        typ = typ if isinstance(typ, str) else typ.__name__
        discrete = ("single_value", "categorical")
        if grid and kind not in (*discrete, "int_uniform", "quniform"):
            raise ConfigError(
                f"key 'parameters.{name}': grid needs values, int_uniform or q_uniform, got {_kind(spec)}"
            )
        if typ in ("bool", "str") and kind not in discrete:
            raise ConfigError(f"key 'parameters.{name}': a choice needs value or values, got {_kind(spec)}")
        if typ == "int" and kind not in (*discrete, "categorical_w_probabilities", "int_uniform"):
            q = param.config.get("q")
            if q is None or not float(q).is_integer():
                raise ConfigError(
                    f"key 'parameters.{name}': an integer; {_kind(spec)} draws non-whole numbers, "
                    "use int_uniform, a q_ distribution with a whole q, or values"
                )
        candidates = list(param.config.get("values", []))
        how = ""
        if param.type == param.CONSTANT:
            continue
        if kind not in ("categorical", "categorical_w_probabilities"):
            bounds = [param.config[b] for b in ("min", "max") if b in param.config and _distribution(spec)]
            tails = [float(plain(param.ppf(x))) for x in (TAIL, 0.5, 1 - TAIL)]
            candidates += bounds + tails
            how = f" ({_kind(spec)} can draw it)"
        for value in candidates:
            _check({**fixed, name: value}, how)


def _distribution(spec: dict[str, Any]) -> bool:
    """Whether min/max are values the distribution can draw (not log-space exponents, not q-rounded)."""
    return spec.get("distribution", "uniform" if "min" in spec else None) in _RANGE_DISTRIBUTIONS


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """The engine draws with Python's and numpy's global generators: seed both, then put them back."""
    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _grid_points(parameters: dict[str, Any]) -> int:
    points = 1
    for name, spec in parameters.items():
        if isinstance(spec, dict) and "parameters" in spec:  # nested: a grid over its own parameters
            points *= _grid_points(spec["parameters"])
            continue
        param = _engine_parameter(name, spec)
        c = param.config
        if "values" in c:
            points *= len(c["values"])
        elif param.type == param.INT_UNIFORM:
            points *= c["max"] - c["min"] + 1
        elif param.type == param.Q_UNIFORM:
            points *= max(1, int((c["max"] - c["min"]) / c["q"]) + 1)
    return points


def _dry_run(config: dict[str, Any], n: int = DRY_RUN_SUGGESTIONS, seed: int = 0, check: bool = True) -> None:
    """Run the engine on the sweep as an agent would (no runs yet, then ``n`` suggestions, each fed back as a
    finished run) and, with ``check``, build every suggestion into a TrainConfig. Seeded, so ``create`` is
    repeatable."""
    from ignite_sweep.engine import next_params, runs_to_stop

    if config["method"] == "bayes" and all("value" in spec for spec in config["parameters"].values()):
        raise ConfigError("key 'parameters': bayes needs a parameter that varies (values or a distribution)")
    if config["method"] == "grid" and (points := _grid_points(config["parameters"])) > MAX_GRID_POINTS:
        raise ConfigError(f"key 'parameters': a grid of {points:,} points; at most {MAX_GRID_POINTS:,}")
    metric = (config.get("metric") or {}).get("name", "val/accuracy")
    history = [{metric: 0.5 + step / 100} for step in range(3)]
    rows: list[dict[str, Any]] = []
    with _seeded(seed):
        try:  # hyperband's bands, on two runs that have reported a few times
            runs_to_stop(config, [{"id": f"dry{i}", "state": "running", "config": {}, "history": history[: i + 1]}
                                  for i in range(2)])  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the engine raises plain ValueErrors and worse
            raise ConfigError(f"key 'early_terminate': the sweep engine cannot run it: {_first_line(exc)}") from None
        for i in range(n):
            try:
                suggestion = next_params(config, rows)
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"the sweep engine cannot run it: {_first_line(exc)}") from None
            if suggestion is None:
                return
            if check:
                _check(suggestion[0], f" (the engine's suggestion {i + 1} of {n})")
            rows.append({"id": f"dry{i}", "state": "finished", "config": suggestion[0], "summary": history[-1],
                         "history": history})  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
