"""The Python API, shaped like wandb's: ``sweep(config) -> id`` and ``agent(id, function=fn, count=N)``.

For notebooks and scripts. ``function`` is what one would hand ``wandb.agent``: it calls ``wandb.init()`` and reads
``wandb.config``. On the local backend each run of it is a forked process with the same live metrics, stops and
bookkeeping as any other run; on W&B it is ``wandb.agent`` itself.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite_sweep.backends.base import AgentResult


def sweep(config: dict[str, Any] | str | os.PathLike[str], backend: str = "auto", project: str | None = None,
          entity: str | None = None) -> str:  # fmt: skip
    """Validate a sweep (a dict, or a sweep YAML's path) and register it; returns its id (``local/<id>`` or
    ``entity/project/<id>``). Parameters that are not ignite-sweep's own make it a sweep for ``agent(function=)``
    (as with ``wandb.sweep``); a ``program`` makes it a program sweep."""
    from ignite_sweep.backends import REGISTRY, choose_backend
    from ignite_sweep.sweepfile import load_sweep, validate_sweep

    def warn(message: str) -> None:
        warnings.warn(message, stacklevel=3)

    chosen, _ = choose_backend(backend)
    target = REGISTRY[chosen]()
    target.preflight()
    if isinstance(config, (str, os.PathLike)):
        checked = load_sweep(Path(config), warn=warn, for_function=True)
    else:
        checked = validate_sweep(config, "sweep config", warn=warn, for_function=True)
    return target.create(checked, project=project, entity=entity, warn=warn)


def agent(sweep_id: str, function: Callable[[], Any] | None = None, count: int | None = None,
          max_consecutive_failures: int = 5) -> AgentResult:  # fmt: skip
    """Run the sweep's runs here: ``function`` for each (as ``wandb.agent``), else the sweep's program or the
    built-in trainer. Returns how many ran and why the agent stopped."""
    from ignite_sweep.backends import backend_for_sweep

    backend = backend_for_sweep(sweep_id)
    return backend.run_agent(sweep_id, count=count, max_consecutive_failures=max_consecutive_failures,
                             function=function)  # fmt: skip
