"""Search engines: what decides the next configs and the early stops of a local sweep (``base.SearchEngine``).

``engine_for(config)`` is the factory: W&B's own engine for ``method: grid | random | bayes``; for ``method:
custom`` the engine ``scheduler.engine`` names, from those ``register``ed (``optuna``: ``optuna_engine``, imported
only when a sweep uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite_sweep.errors import ConfigError
from ignite_sweep.search.base import SearchEngine, Suggestion

ENGINES: dict[str, Callable[[dict[str, Any]], SearchEngine]] = {}

__all__ = ["ENGINES", "SearchEngine", "Suggestion", "engine_for", "register"]


def register(name: str, factory: Callable[[dict[str, Any]], SearchEngine]) -> None:
    """Make ``scheduler: {engine: <name>}`` of a ``method: custom`` sweep run with ``factory(config)``."""
    ENGINES[name] = factory


def _optuna(config: dict[str, Any]) -> SearchEngine:
    from ignite_sweep.search.optuna_engine import OptunaEngine

    return OptunaEngine(config)


register("optuna", _optuna)


def engine_for(config: dict[str, Any]) -> SearchEngine:
    if config.get("method") == "custom":
        name = (config.get("scheduler") or {}).get("engine")
        if name not in ENGINES:
            allowed = " | ".join(sorted(ENGINES)) or "none registered"
            raise ConfigError(f"scheduler.engine: {name!r} is not an engine here; allowed: {allowed}")
        return ENGINES[name](config)
    from ignite_sweep.search.wandb_engine import WandbEngine

    return WandbEngine(config)
