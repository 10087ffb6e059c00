"""The Python API, shaped like wandb's: ``sweep(config) -> id`` and ``agent(id, function=fn, count=N)``.

For notebooks and scripts. ``function`` is what one would hand ``wandb.agent``: it calls ``wandb.init()`` and reads
``wandb.config``. On the local backend each run of it is a forked process with the same live metrics, stops and
bookkeeping as any other run; on W&B it is ``wandb.agent`` itself.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ignite_sweep.backends.base import AgentResult
from ignite_sweep.errors import ConfigError


@dataclass
class Created:
    """A registered sweep: its id, its validated config, and the backend chosen (and why)."""

    sweep_id: str
    config: dict[str, Any]
    backend: str
    why: str


def create(config: dict[str, Any] | str | os.PathLike[str], backend: str = "auto", project: str | None = None,
           entity: str | None = None, warn: Callable[[str], None] | None = None,
           for_function: bool = False) -> Created:  # fmt: skip
    """The one create path (``ignite-sweep create`` prints around it; ``sweep()`` returns its id): resolve the
    backend, preflight it (no login or no server is one line before the sweep is even read), validate the sweep
    (a dict, or a sweep YAML's path; ``for_function``: parameters that are not ignite-sweep's own are allowed, for
    a function of one's own) and register it."""
    from ignite_sweep.backends import REGISTRY, choose_backend
    from ignite_sweep.sweepfile import load_sweep, validate_sweep

    chosen, why = choose_backend(backend)
    if chosen != "local" and _method(config) == "custom":
        where = config if isinstance(config, (str, os.PathLike)) else "sweep config"
        raise ConfigError(f"{where}: key 'method': custom (Optuna) runs on the local backend only, not on W&B's; "
                          "use --backend local (its runs can be uploaded to W&B with `ignite-sweep sync`)")  # fmt: skip
    target = REGISTRY[chosen]()
    target.preflight()
    if isinstance(config, (str, os.PathLike)):
        checked = load_sweep(Path(config), warn=warn, for_function=for_function)
    else:
        checked = validate_sweep(config, "sweep config", warn=warn, for_function=for_function)
    return Created(target.create(checked, project=project, entity=entity, warn=warn), checked, chosen, why)


def _method(config: dict[str, Any] | str | os.PathLike[str]) -> Any:
    """A sweep's ``method``, read before the backend is contacted (a file that cannot be read: its load says so)."""
    if not isinstance(config, (str, os.PathLike)):
        return config.get("method") if isinstance(config, dict) else None
    import yaml

    try:
        loaded = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return loaded.get("method") if isinstance(loaded, dict) else None


def sweep(config: dict[str, Any] | str | os.PathLike[str], backend: str = "auto", project: str | None = None,
          entity: str | None = None) -> str:  # fmt: skip
    """Validate a sweep (a dict, or a sweep YAML's path) and register it; returns its id (``local/<id>`` or
    ``entity/project/<id>``). Parameters that are not ignite-sweep's own make it a sweep for ``agent(function=)``
    (as with ``wandb.sweep``); a ``program`` makes it a program sweep."""

    def warn(message: str) -> None:
        warnings.warn(message, stacklevel=4)

    return create(config, backend, project, entity, warn=warn, for_function=True).sweep_id


def agent(sweep_id: str, function: Callable[[], Any] | None = None, count: int | None = None,
          max_consecutive_failures: int = 5, fuse: int = 1) -> AgentResult:  # fmt: skip
    """Run the sweep's runs here: ``function`` for each (as ``wandb.agent``), else the sweep's program or the
    built-in trainer (``fuse`` K > 1: up to K of its runs trained together in one process, local backend).
    Returns how many ran and why the agent stopped."""
    from ignite_sweep.backends import backend_for_sweep

    if fuse < 1:
        raise ConfigError(f"fuse: got {fuse}, allowed: an integer >= 1")
    backend = backend_for_sweep(sweep_id)
    return backend.run_agent(sweep_id, count=count, max_consecutive_failures=max_consecutive_failures,
                             function=function, fuse=fuse)  # fmt: skip
