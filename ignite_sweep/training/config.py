"""Hyperparameters: TrainConfig, its rules and help.

``TrainConfig`` is every knob the train function reads. It is built from a flat dict, which is what
``wandb.config`` holds inside a sweep run, so the same keys work in a sweep YAML's ``parameters``, on the
``python -m ignite_sweep.train --key=value`` command line and in ``--config FILE.yaml``.

No torch or wandb import here: this module is loaded by ``ignite-sweep --help``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ignite_sweep.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
LOSSES = ("nll", "cross_entropy")
LR_SCHEDULES = ("none", "cosine", "step", "warmup-cosine")
DEVICES = ("auto", "cpu", "cuda")
# metric name -> goal. These are the names the train function logs (see wandb_logging.py).
EVAL_METRICS = {"val/accuracy": "maximize", "val/loss": "minimize"}
# What a sweep's metric.name may be: reported after every evaluation, so hyperband and bayes see it.
LOGGED_METRICS = {**EVAL_METRICS, "best/val/accuracy": "maximize", "best/val/loss": "minimize"}


def _default_data_dir() -> str:
    return os.environ.get("IGNITE_SWEEP_DATA", "./data")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of one training run; defaults follow Ignite's MNIST example."""

    dataset: str = "mnist"
    model: str = "net"
    batch_size: int = 64
    val_batch_size: int = 1000
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.5
    weight_decay: float = 0.0
    nesterov: bool = False
    optimizer: str = "sgd"
    lr_schedule: str = "none"
    warmup_epochs: float = 1.0
    lr_step_epochs: int = 3
    lr_gamma: float = 0.1
    dropout: float = 0.5
    loss: str = "nll"
    seed: int = 0
    patience: int = 0
    metric: str = "val/accuracy"
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    channels_last: bool = False
    log_interval: int = 10
    data_dir: str = field(default_factory=_default_data_dir)
    download: bool = True
    factory_args: dict[str, Any] = field(default_factory=dict)
    """The user's own hyperparameters: keys that are no field above, for a user ``model`` or ``dataset`` factory
    (``package.module:factory``) whose signature takes them by name (or ``**kwargs``). A W&B nested parameter is
    one of them, a dict."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build and validate from a flat dict; unknown keys and bad values raise ConfigError."""
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "factory_args"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = dict(values.get("factory_args") or {})
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key == "factory_args":
                continue
            if key not in known:
                extra[str(raw_key)] = value
                continue
            kwargs[key] = coerce(key, value, known[key].type)
        cfg = cls(**kwargs, factory_args=extra)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Flat, as a sweep and wandb.config hold it: the user's own hyperparameters next to the built-in ones."""
        values = dataclasses.asdict(self)
        return {**{k: v for k, v in values.items() if k != "factory_args"}, **self.factory_args}

    def factory_kwargs(self, kind: str) -> dict[str, Any]:
        """What the ``kind`` ("model" or "dataset") factory gets of the user's own hyperparameters."""
        spec = self.model if kind == "model" else self.dataset
        if ":" not in spec or not self.factory_args:
            return {}
        accepts = factory_parameters(spec, kind)
        return {k: v for k, v in self.factory_args.items() if accepts is None or k in accepts}

    def validate(self) -> None:
        for key, (check, allowed) in RULES.items():
            value = getattr(self, key)
            if not check(value):
                raise ConfigError(f"hyperparameter '{key}': got {value!r}, allowed: {allowed}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError("hyperparameter 'nesterov': needs optimizer 'sgd' and momentum > 0")
        if self.lr_schedule == "warmup-cosine" and self.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"hyperparameter 'warmup_epochs': got {self.warmup_epochs}, allowed: less than epochs ({self.epochs})"
            )
        check_registered("dataset", self.dataset)
        check_registered("model", self.model)
        if self.loss not in LOSSES:
            module, _, attr = self.loss.partition(":")
            if not module or not attr:
                raise ConfigError(f"hyperparameter 'loss': got {self.loss!r}, allowed: {' | '.join(LOSSES)} or "
                                  "package.module:fn")  # fmt: skip
        self._check_factory_args()

    def _check_factory_args(self) -> None:
        """Each user hyperparameter is taken by a user factory, by name; else one line with a suggestion."""
        if not self.factory_args:
            return
        known = [f.name for f in dataclasses.fields(self) if f.name != "factory_args"]
        taken, takes_any = factories_take((kind, spec) for kind, spec in (("model", self.model),
                                                                         ("dataset", self.dataset)) if ":" in spec)
        for key in self.factory_args:
            if key in BUILTIN_FACTORY_ARGS["model"] + BUILTIN_FACTORY_ARGS["dataset"]:
                raise ConfigError(f"hyperparameter '{key}': the trainer passes it to the factory itself "
                                  "(from the dataset or other hyperparameters); not a sweep parameter")  # fmt: skip
            if not takes_any and key not in taken:
                names = known + sorted(taken)
                where = f" (nor a parameter of {' or '.join(s for s in (self.model, self.dataset) if ':' in s)})"
                raise ConfigError(unknown_key_message(key, names, what="hyperparameter") + (where if taken else ""))


def factories_take(factories: Iterable[tuple[str, str]]) -> tuple[set[str], bool]:
    """For user factories as (kind, ``package.module:factory``): the parameters they take by name, and whether
    one takes ``**kwargs`` (then any name goes)."""
    taken: set[str] = set()
    takes_any = False
    for kind, spec in factories:
        accepts = factory_parameters(spec, kind)
        takes_any |= accepts is None
        taken |= accepts or set()
    return taken, takes_any


def factory_parameters(spec: str, kind: str) -> set[str] | None:
    """The keyword parameters a user factory takes by name; None when it takes ``**kwargs``. The built-in ones
    (``in_channels``... for a model, ``data_dir``... for a dataset) are TrainConfig's to pass, not the user's."""
    import inspect

    from ignite_sweep.training.data import import_factory

    factory = import_factory(spec, kind)
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    builtin = BUILTIN_FACTORY_ARGS[kind]
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in builtin}


BUILTIN_FACTORY_ARGS = {
    "model": ("in_channels", "image_size", "num_classes", "dropout"),
    "dataset": ("data_dir", "download", "seed"),
}


def check_registered(kind: str, value: str) -> None:
    """A dataset/model is a registered name or a user factory 'package.module:factory'."""
    if ":" in value:
        module, _, attr = value.partition(":")
        if not module or not attr:
            raise ConfigError(f"hyperparameter '{kind}': got {value!r}, allowed: package.module:factory")
        return
    names = registered_names(kind)
    if value not in names:
        raise ConfigError(
            f"hyperparameter '{kind}': got {value!r}, allowed: {' | '.join(names)} or package.module:factory"
        )


DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10")
"""The keys of ``data.DATASETS``, and ``MODEL_NAMES`` of ``models.MODELS`` (a test keeps them equal): checking a name
must not import torch, which ``models`` does (about a second of ``ignite-sweep create``)."""
MODEL_NAMES = ("net", "mlp", "cnn")

DEFAULT_PROJECT = "ignite-sweep"
"""The W&B project of a sweep whose file and command line name none."""


def registered_names(kind: str) -> list[str]:
    return list(DATASET_NAMES if kind == "dataset" else MODEL_NAMES)


def _between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = True) -> Callable[[Any], bool]:
    def check(v: float) -> bool:
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return above and below

    return check


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "val_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "epochs": (lambda v: v >= 1, "an integer >= 1"),
    "lr": (lambda v: v > 0, "a number > 0"),
    "momentum": (_between(0, 1), "a number in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "optimizer": (lambda v: v in OPTIMIZERS, " | ".join(OPTIMIZERS)),
    "lr_schedule": (lambda v: v in LR_SCHEDULES, " | ".join(LR_SCHEDULES)),
    "warmup_epochs": (lambda v: v >= 0, "a number >= 0"),
    "lr_step_epochs": (lambda v: v >= 1, "an integer >= 1"),
    "lr_gamma": (_between(0, 1, lo_open=True, hi_open=False), "a number in (0, 1]"),
    "dropout": (_between(0, 1), "a number in [0, 1)"),
    "seed": (lambda v: v >= 0, "an integer >= 0"),
    "patience": (lambda v: v >= 0, "an integer >= 0 (0 turns early stopping off)"),
    "metric": (lambda v: v in EVAL_METRICS, " | ".join(EVAL_METRICS)),
    "device": (lambda v: v in DEVICES, " | ".join(DEVICES)),
    "log_interval": (lambda v: v >= 1, "an integer >= 1"),
}

HELP: dict[str, str] = {
    "dataset": "digits (bundled, offline) | mnist | fashion-mnist | cifar10 | package.module:factory",
    "model": "net (Ignite's MNIST example) | mlp | cnn | package.module:factory",
    "batch_size": "training batch size",
    "val_batch_size": "evaluation batch size",
    "epochs": "maximum number of epochs",
    "lr": "learning rate",
    "momentum": "SGD momentum (ignored by adam/adamw)",
    "weight_decay": "L2 penalty / decoupled weight decay for adamw",
    "nesterov": "Nesterov momentum (sgd with momentum > 0)",
    "optimizer": " | ".join(OPTIMIZERS),
    "lr_schedule": "learning-rate schedule per iteration: " + " | ".join(LR_SCHEDULES),
    "warmup_epochs": "linear warm-up length for warmup-cosine, in epochs",
    "lr_step_epochs": "step schedule: multiply lr by lr_gamma every this many epochs",
    "lr_gamma": "step schedule factor",
    "dropout": "dropout probability",
    "loss": "nll (models return log-probabilities) | cross_entropy (models return logits) | package.module:fn "
    "(fn(output, target) -> scalar tensor)",
    "seed": "random seed (weights, shuffling)",
    "patience": "early stopping: evaluations without improvement of `metric` (0 = off)",
    "metric": "metric for early stopping and the best checkpoint: " + " | ".join(EVAL_METRICS),
    "device": "auto (cuda when available) | cpu | cuda",
    "amp": "mixed precision (CUDA only; ignored on the CPU)",
    "compile": "torch.compile the model (the first steps compile it)",
    "channels_last": "channels-last memory format for 4-D inputs (CNNs on CUDA; ignored on the CPU)",
    "log_interval": "log train/loss, train/lr, train/grad_norm every N iterations",
    "data_dir": "where datasets live (env IGNITE_SWEEP_DATA)",
    "download": "download a missing torchvision dataset",
}

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert a value from YAML / the command line / wandb.config to the field's type."""
    name = typ if isinstance(typ, str) else typ.__name__
    try:
        if name == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            raise ValueError
        if name == "int":
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if name == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        kind = {"bool": "true or false", "int": "an integer", "float": "a number"}.get(name, "a string")
        raise ConfigError(f"hyperparameter '{key}': got {value!r}, allowed: {kind}") from None


ALIASES = {
    "learning_rate": "lr", "learningrate": "lr", "lr0": "lr", "base_lr": "lr", "init_lr": "lr",
    "num_epochs": "epochs", "n_epochs": "epochs", "max_epochs": "epochs", "epoch": "epochs",
    "bs": "batch_size", "batch": "batch_size", "train_batch_size": "batch_size", "batchsize": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "eval_batch_size": "val_batch_size", "test_batch_size": "val_batch_size", "valid_batch_size": "val_batch_size",
    "wd": "weight_decay", "l2": "weight_decay", "decay": "weight_decay",
    "opt": "optimizer", "optim": "optimizer", "optimiser": "optimizer",
    "scheduler": "lr_schedule", "lr_scheduler": "lr_schedule", "schedule": "lr_schedule",
    "warmup": "warmup_epochs", "drop": "dropout", "dropout_rate": "dropout", "drop_rate": "dropout",
    "random_seed": "seed", "arch": "model", "architecture": "model", "network": "model", "data": "dataset",
    "mixed_precision": "amp", "fp16": "amp",
}  # fmt: skip
"""Names public sweep files use for this project's hyperparameters (the closest-name match misses them)."""


def unknown_key_message(key: str, known: Mapping[str, Any] | list[str], what: str) -> str:
    alias = ALIASES.get(key.lower().replace("-", "_"))
    if alias in known:
        return f"unknown {what} '{key}'; did you mean '{alias}'?"
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if not close:  # 'lr_rate' -> 'lr': a known name that the key starts with
        close = sorted((k for k in known if key.startswith(k) or k.startswith(key)), key=len, reverse=True)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
    return f"unknown {what} '{key}'; {hint}"
