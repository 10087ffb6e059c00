"""ignite-sweep: hyperparameter sweeps over PyTorch Ignite training, on W&B or fully offline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ignite_sweep.errors import BackendError, ConfigError, DataError, IgniteSweepError
from ignite_sweep.training.config import TrainConfig

__version__ = "0.1.0"
__all__ = [
    "BackendError",
    "ConfigError",
    "DataError",
    "IgniteSweepError",
    "TrainConfig",
    "__version__",
    "agent",
    "sweep",
    "train",
]

if TYPE_CHECKING:
    from ignite_sweep.api import agent, sweep
    from ignite_sweep.training.train import train


def __getattr__(name: str) -> Any:
    if name == "train":  # lazy: importing the package must not import torch
        from ignite_sweep.training.train import train

        return train
    if name in ("sweep", "agent"):  # wandb.sweep / wandb.agent's shape, for notebooks
        from ignite_sweep import api

        return getattr(api, name)
    raise AttributeError(name)
