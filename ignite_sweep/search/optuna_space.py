"""A sweep's ``parameters:`` as Optuna distributions: every W&B distribution Optuna can sample, mapped exactly.

W&B (``sweeps``)                     Optuna
value                                not searched: the same value in every run's config
values                               CategoricalDistribution (values that are not None/bool/int/float/str: by index)
values + probabilities               CategoricalDistribution, with a warning: Optuna's samplers take no weights
min/max (ints), int_uniform          IntDistribution(min, max)
min/max, uniform                     FloatDistribution(min, max)
q_uniform                            the multiples of q W&B's rounding lands on (with a chance above zero), by q
                                     (IntDistribution with an integer q, else FloatDistribution(step=q))
log_uniform_values,                  FloatDistribution(min, max, log=True)
inv_log_uniform_values
log_uniform (ln bounds)              FloatDistribution(e^min, e^max, log=True)
inv_log_uniform (ln bounds of 1/x)   FloatDistribution(e^-max, e^-min, log=True)
q_log_uniform_values, q_log_uniform  log-uniform as above, then rounded to q as W&B rounds (Optuna has no log + step)
normal, q_normal, log_normal,        refused at create: Optuna's samplers need bounds; the message says what range
q_log_normal, beta, q_beta           to write instead
nested parameters                    each leaf, named outer.inner; the run's config is nested as W&B nests it
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ignite_sweep.errors import ConfigError

PRIMITIVE = (type(None), bool, int, float, str)
SIGMAS = 3.0
"""A refused normal's suggested range: mu +- this many sigma."""


@dataclass
class Leaf:
    """One parameter: its path in the run's config and how Optuna draws it."""

    path: tuple[str, ...]
    distribution: Any = None  # an Optuna distribution; None: a constant
    constant: Any = None
    choices: list[Any] | None = None  # values drawn by index (not Optuna's kind of choice)
    q: float | int | None = None  # rounded to q after a log-uniform draw

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def value(self, params: dict[str, Any]) -> Any:
        if self.distribution is None:
            return self.constant
        drawn = params[self.name]
        if self.choices is not None:
            return self.choices[drawn]
        if self.q is not None:
            rounded = round(drawn / self.q) * self.q
            return int(rounded) if isinstance(self.q, int) else float(rounded)
        return drawn


class Space:
    """The ``parameters:`` of a sweep, for Optuna: ``distributions`` to ask for, ``config`` of what was drawn."""

    def __init__(self, parameters: dict[str, Any], warn: Any = None) -> None:
        self.leaves: list[Leaf] = []
        self._add(parameters or {}, (), warn)
        names = [leaf.name for leaf in self.leaves]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ConfigError(f"key 'parameters': {clash[0]!r} names two parameters (a nested one and a dotted one); "
                              "rename one")  # fmt: skip
        self.distributions = {leaf.name: leaf.distribution for leaf in self.leaves if leaf.distribution is not None}
        """What Optuna asks for: each parameter that varies, by its (dotted) name."""

    @property
    def constants(self) -> dict[str, Any]:
        """The parameters that are one value (nested as in a run's config)."""
        return nest({leaf.path: leaf.constant for leaf in self.leaves if leaf.distribution is None})

    def config(self, params: dict[str, Any]) -> dict[str, Any]:
        """What Optuna drew (``trial.params``) -> the run's config, nested as W&B nests it."""
        return nest({leaf.path: leaf.value(params) for leaf in self.leaves})

    def _add(self, parameters: dict[str, Any], prefix: tuple[str, ...], warn: Any) -> None:
        for name, spec in parameters.items():
            path = (*prefix, str(name))
            if isinstance(spec, dict) and "parameters" in spec:
                self._add(spec["parameters"] or {}, path, warn)
            else:
                self.leaves.append(leaf(path, spec, warn))


def nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def leaf(path: tuple[str, ...], spec: Any, warn: Any = None) -> Leaf:
    """One W&B parameter spec -> its Leaf; a distribution Optuna cannot sample: a ConfigError saying what to write."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from ignite_sweep.sweepfile import _engine_parameter

    key = f"key 'parameters.{'.'.join(path)}'"
    try:
        param = _engine_parameter(".".join(path), spec)
    except Exception as exc:  # noqa: BLE001 - the schema check names the problem first; this is a backstop
        raise ConfigError(f"{key}: {exc}") from None
    c, kind = param.config, param.type
    if kind == param.CONSTANT:
        return Leaf(path, constant=c["value"])
    if kind in (param.CATEGORICAL, param.CATEGORICAL_PROB):
        if kind == param.CATEGORICAL_PROB and warn is not None:
            warn(f"{key}: Optuna's samplers take no probabilities: its values are searched as plain values")
        values = list(c["values"])
        if all(isinstance(v, PRIMITIVE) for v in values) and len({repr(v) for v in values}) == len(values):
            return Leaf(path, CategoricalDistribution(values))
        return Leaf(path, CategoricalDistribution(list(range(len(values)))), choices=values)
    if kind == param.INT_UNIFORM:
        return Leaf(path, IntDistribution(int(c["min"]), int(c["max"])))
    if kind == param.UNIFORM:
        return Leaf(path, FloatDistribution(float(c["min"]), float(c["max"])))
    if kind == param.Q_UNIFORM:
        q = c["q"]
        first, last = q_steps(c["min"], c["max"], q)
        if isinstance(q, int):
            return Leaf(path, IntDistribution(first * q, last * q, step=q))
        low, high = (float(f"{k * q:.12g}") for k in (first, last))
        return Leaf(path, FloatDistribution(low, high, step=float(q)))
    bounds = {
        param.LOG_UNIFORM_V1: lambda: (math.exp(c["min"]), math.exp(c["max"])),
        param.LOG_UNIFORM_V2: lambda: (c["min"], c["max"]),
        param.INV_LOG_UNIFORM_V1: lambda: (math.exp(-c["max"]), math.exp(-c["min"])),
        param.INV_LOG_UNIFORM_V2: lambda: (c["min"], c["max"]),
        param.Q_LOG_UNIFORM_V1: lambda: (math.exp(c["min"]), math.exp(c["max"])),
        param.Q_LOG_UNIFORM_V2: lambda: (c["min"], c["max"]),
    }
    if kind in bounds:
        low, high = bounds[kind]()
        q = c.get("q") if kind in (param.Q_LOG_UNIFORM_V1, param.Q_LOG_UNIFORM_V2) else None
        return Leaf(path, FloatDistribution(float(low), float(high), log=True), q=q)
    raise ConfigError(f"{key}: {refusal(c)}")


def q_steps(low: float, high: float, q: float) -> tuple[int, int]:
    """The multiples of q W&B's q_uniform draws (``round(uniform(low, high) / q) * q``) with a chance above zero:
    (first, last) k of k * q."""
    first, last = math.floor(low / q + 0.5), math.ceil(high / q + 0.5) - 1
    return (first, last) if first <= last else (round(low / q),) * 2


def refusal(c: dict[str, Any]) -> str:
    """Why Optuna cannot sample an unbounded (or beta) distribution, and the bounded one to write instead."""
    dist = c["distribution"]
    q = f", q: {c['q']:g}" if dist.startswith("q_") else ""
    prefix = "q_" if q else ""
    if dist in ("beta", "q_beta"):
        instead = f"distribution: {prefix}uniform, min: 0, max: 1{q}"
    else:
        mu, sigma = float(c["mu"]), float(c["sigma"])
        low, high = mu - SIGMAS * sigma, mu + SIGMAS * sigma
        if "log" in dist:
            instead = (f"distribution: {prefix}log_uniform_values, min: {math.exp(low):.6g}, max: {math.exp(high):.6g}"
                       f"{q} (e^(mu -+ {SIGMAS:g} sigma))")  # fmt: skip
        else:
            instead = f"distribution: {prefix}uniform, min: {low:.6g}, max: {high:.6g}{q} (mu -+ {SIGMAS:g} sigma)"
    return f"Optuna cannot sample distribution {dist} (its samplers need bounds); write {instead}"
