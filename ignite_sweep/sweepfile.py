"""Sweep files: read a W&B sweep YAML and validate it before anything is registered.

The schema is W&B's own (the ``sweeps`` engine's); hyperparameter names and values are TrainConfig's.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any

from ignite_sweep.config import LOGGED_METRICS, TrainConfig, unknown_key_message
from ignite_sweep.errors import ConfigError

SWEEP_COMMAND = ["${env}", "${interpreter}", "-m", "ignite_sweep.train", "${args}"]
METHODS = ("grid", "random", "bayes")
_RANGE_DISTRIBUTIONS = ("uniform", "int_uniform", "q_uniform", "log_uniform_values", "q_log_uniform_values")


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a W&B sweep YAML file and validate it (see ``validate_sweep``)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    return validate_sweep(config, str(path))


def validate_sweep(config: Any, source: str = "sweep config") -> dict[str, Any]:
    """Check a sweep config against W&B's schema and TrainConfig; returns it with a ``command`` added.

    Errors are one line: the file, the key, what is allowed.
    """
    import warnings

    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping with method, metric and parameters")
    method = config.get("method")
    if method not in METHODS:
        raise ConfigError(f"{source}: key 'method': got {method!r}, allowed: {' | '.join(METHODS)}")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(f"{source}: key 'parameters': needs at least one hyperparameter")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, spec in parameters.items():
        if name not in known:
            raise ConfigError(f"{source}: {unknown_key_message(name, sorted(known), what='parameter')}")
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{source}: key 'parameters.{name}': expected a mapping such as {{value: ...}} or {{values: [...]}}"
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps

        try:
            violations = sweeps.schema_violations_from_proposed_config(config)
        except Exception as exc:  # noqa: BLE001 - the engine raises plain ValueErrors on some shapes
            violations = [str(exc).splitlines()[0]]
    if violations:
        raise ConfigError(f"{source}: {violations[0]}")

    def check(values: dict[str, Any]) -> None:
        try:
            TrainConfig.from_dict(values)
        except ConfigError as exc:
            message = str(exc).replace("hyperparameter '", "key 'parameters.", 1)
            raise ConfigError(f"{source}: {message}") from None

    fixed = {k: v["value"] for k, v in parameters.items() if "value" in v}
    check(fixed)
    for name, spec in parameters.items():
        candidates = list(spec.get("values", []))
        if spec.get("distribution", "uniform" if "min" in spec else None) in _RANGE_DISTRIBUTIONS:
            candidates += [spec[b] for b in ("min", "max") if b in spec]
        for value in candidates:
            check({**fixed, name: value})
    metric = config.get("metric")
    if metric is not None:
        name = metric.get("name")
        if name not in LOGGED_METRICS:
            close = difflib.get_close_matches(str(name), list(LOGGED_METRICS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: key 'metric.name': got {name!r}, allowed: {' | '.join(LOGGED_METRICS)}{hint}")
    needs_metric = method == "bayes" or "early_terminate" in config or "target" in (metric or {})
    if needs_metric and metric is None:
        raise ConfigError(f"{source}: key 'metric': method {method} and early_terminate need a metric to optimise")
    result = dict(config)
    result.setdefault("command", list(SWEEP_COMMAND))
    return result
