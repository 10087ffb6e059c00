"""A multi-objective sweep's Pareto front, as pure functions over its runs (the CLI, the pool's view and the
report all import it; no I/O).

A sweep's objectives are its ``metrics:`` list (W&B's multi-objective form, ``method: custom``), else its one
``metric``. A run is on the front when it is a result (``finished`` or ``stopped``), its summary has a finite value
for every objective, and no other such run is at least as good on every objective and better on one. Two runs with
the same values are both on it. This is Optuna's ``study.best_trials`` over the same runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

Objective = tuple[str, str]  # (metric name, goal: minimize | maximize)
FRONT_STATES = ("finished", "stopped")
"""The runs Optuna's study holds as COMPLETE (a failed or crashed run is FAIL there, even with a summary)."""


class Scored(Protocol):
    state: str
    summary: dict[str, Any]


R = TypeVar("R", bound=Scored)


def objectives_of(config: Mapping[str, Any]) -> list[Objective]:
    """(name, goal) of each objective: the ``metrics:`` list, else the one ``metric`` (none without either)."""
    metrics = config.get("metrics")
    if isinstance(metrics, list) and metrics:
        found = [m for m in metrics if isinstance(m, Mapping) and m.get("name")]
    else:
        metric = config.get("metric")
        found = [metric] if isinstance(metric, Mapping) and metric.get("name") else []
    return [(str(m["name"]), "maximize" if m.get("goal") == "maximize" else "minimize") for m in found]


def values(summary: Mapping[str, Any] | None, objectives: Sequence[Objective]) -> tuple[float, ...] | None:
    """A summary's value on each objective, or None when one is missing or not a finite number."""
    found = []
    for name, _ in objectives:
        value = (summary or {}).get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        found.append(float(value))
    return tuple(found)


def dominates(a: Sequence[float], b: Sequence[float], objectives: Sequence[Objective]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every objective and better on one."""
    better = False
    for x, y, (_, goal) in zip(a, b, objectives, strict=True):
        if goal == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def front_indices(points: Sequence[Sequence[float] | None], objectives: Sequence[Objective]) -> list[int]:
    """The indices of the points no other point dominates (None: no point), in their order."""
    scored = [(i, p) for i, p in enumerate(points) if p is not None]
    return [i for i, p in scored if not any(dominates(q, p, objectives) for j, q in scored if j != i)]


def pareto_front(runs: Iterable[R], objectives: Sequence[Objective]) -> list[R]:
    """The runs on the Pareto front of ``objectives`` (``finished`` and ``stopped`` runs only; in the runs' order)."""
    runs = list(runs)
    points = [values(r.summary, objectives) if r.state in FRONT_STATES else None for r in runs]
    return [runs[i] for i in front_indices(points, objectives)]

