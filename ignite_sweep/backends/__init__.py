"""Backends: ``open_backend(name or sweep id)``; a dict registry, as Optuna's storages are chosen."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ignite_sweep.errors import ConfigError

if TYPE_CHECKING:
    from ignite_sweep.backends.base import Backend

BACKENDS = ("auto", "local", "wandb")


def _local() -> Backend:
    from ignite_sweep.backends.local import LocalBackend

    return LocalBackend()


def _wandb() -> Backend:
    from ignite_sweep.backends.wandb import WandbBackend

    return WandbBackend()


REGISTRY: dict[str, Callable[[], Backend]] = {"local": _local, "wandb": _wandb}


def wandb_login_found() -> bool:
    from ignite_sweep.backends.wandb import api_key  # light: the SDK is imported only where it is used

    return api_key() is not None


def choose_backend(name: str) -> tuple[str, str]:
    """Resolve 'auto'; returns (backend name, why)."""
    if name not in BACKENDS:
        raise ConfigError(f"option '--backend': got '{name}', allowed: {' | '.join(BACKENDS)}")
    if name != "auto":
        return name, f"--backend {name}"
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return "local", f"WANDB_MODE={mode}"
    if wandb_login_found():
        return "wandb", "a W&B login was found"
    return "local", "no W&B login found; `wandb login` or WANDB_API_KEY selects W&B"


def backend_for_sweep(sweep_id: str) -> Backend:
    """local/<id> -> local; entity/project/<id> -> W&B."""
    if sweep_id.startswith("local/"):
        return REGISTRY["local"]()
    if sweep_id.count("/") == 2 and all(sweep_id.split("/")):
        return REGISTRY["wandb"]()
    raise ConfigError(f"sweep id '{sweep_id}': expected local/<id> or entity/project/<id>")


def open_backend(name: str) -> Backend:
    return REGISTRY[choose_backend(name)[0]]()
