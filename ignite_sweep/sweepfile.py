"""Sweep files: read a W&B sweep YAML and prove it can run before anything is registered.

The schema is W&B's own (the ``sweeps`` engine's). In a sweep of the built-in trainer, hyperparameter names and
values are TrainConfig's; a program sweep (its own ``program`` or ``command``) names its own. A sweep
is refused at ``create`` (one line: the file, the key path, what is allowed) when the schema says no, when a
value a parameter can take is not a valid hyperparameter, or when the engine itself cannot run it (a dry
``next_run`` plus a handful of seeded suggestions, each built into a TrainConfig).
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
METHODS = ("grid", "random", "bayes")
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
    return validate_sweep(config, str(path), warn=warn, for_function=for_function)


def validate_sweep(config: Any, source: str = "sweep config", warn: Callable[[str], None] | None = None,
                   for_function: bool = False) -> dict[str, Any]:  # fmt: skip
    """Check a sweep config against W&B's schema and TrainConfig, then dry-run the engine on it; returns it
    with a ``command`` added. ``warn`` gets what W&B accepts with a warning (deprecated distributions).
    ``for_function`` (the Python API's ``sweep``): parameters that are not TrainConfig's make a sweep for a
    user function, checked as W&B checks them and registered without a command.

    Errors are one line: the file, the key, what is allowed.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping with method, metric and parameters")
    method = config.get("method")
    if method not in METHODS:
        raise ConfigError(f"{source}: key 'method': got {method!r}, allowed: {' | '.join(METHODS)}")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(f"{source}: key 'parameters': needs at least one hyperparameter")
    if is_program_sweep(config):
        return _validate_program_sweep(config, source, warn)
    if for_function and "command" not in config:  # the built-in trainer's sweep if it is one, else the function's
        metric_name = (config.get("metric") or {}).get("name", "val/accuracy")
        user_factory = any(":" in str(v) for k in ("model", "dataset") for v in _spec_values(parameters.get(k)))
        builtin = all(str(n) in _FIELDS for n in parameters) or user_factory
        if builtin and metric_name in LOGGED_METRICS:
            return validate_sweep(config, source, warn)  # its errors are the user's to see, not a reason to switch
        return _validate_program_sweep(config, source, warn, program=False)
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
    metric = config.get("metric")
    if metric is not None:
        name = metric.get("name")
        if name not in LOGGED_METRICS:
            close = difflib.get_close_matches(str(name), list(LOGGED_METRICS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: key 'metric.name': got {name!r}, allowed: {' | '.join(LOGGED_METRICS)}{hint}")
    _check_needs_metric(config, source)
    try:
        _check_values(config)
        _dry_run(config)
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
                            program: bool = True) -> dict[str, Any]:  # fmt: skip
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
    try:
        _dry_run(config, check=False)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return dict(config)


def _check_schema(config: dict[str, Any], source: str, warn: Callable[[str], None] | None) -> None:
    """W&B's schema: a violation is one line; what W&B accepts with a warning goes to ``warn``."""
    from ignite_sweep.sweep_schema import schema_problems

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

    parameters = config["parameters"]
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
