from __future__ import annotations

import pytest

from ignite_sweep.errors import ConfigError
from ignite_sweep.training.config import TrainConfig


def test_defaults_follow_the_seed_script() -> None:
    cfg = TrainConfig()
    assert (cfg.batch_size, cfg.val_batch_size, cfg.epochs, cfg.lr, cfg.momentum, cfg.log_interval) == (
        64,
        1000,
        10,
        0.01,
        0.5,
        10,
    )
    assert (cfg.dataset, cfg.model, cfg.optimizer) == ("mnist", "net", "sgd")


def test_from_dict_coerces_strings_and_numbers() -> None:
    cfg = TrainConfig.from_dict({"lr": "0.1", "batch_size": 32.0, "nesterov": "true", "epochs": "2"})
    assert cfg.lr == 0.1 and cfg.batch_size == 32 and isinstance(cfg.batch_size, int)
    assert cfg.nesterov is True and cfg.epochs == 2


def test_dashes_are_accepted_for_underscores() -> None:
    assert TrainConfig.from_dict({"batch-size": 8}).batch_size == 8


def test_unknown_key_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown hyperparameter 'optimiser'; did you mean 'optimizer'\?"):
        TrainConfig.from_dict({"optimiser": "sgd"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": -1}, r"'lr': got -1.0, allowed: a number > 0"),
        ({"lr": 0}, r"'lr'"),
        ({"batch_size": 0}, r"'batch_size': got 0, allowed: an integer >= 1"),
        ({"batch_size": 1.5}, r"'batch_size': got 1.5, allowed: an integer"),
        ({"optimizer": "rmsprop"}, r"'optimizer': got 'rmsprop', allowed: sgd \| adam \| adamw"),
        ({"lr_schedule": "linear"}, r"'lr_schedule'.*none \| cosine \| step \| warmup-cosine"),
        ({"momentum": 1.0}, r"'momentum'"),
        ({"dataset": "imagenet"}, r"'dataset': got 'imagenet', allowed: digits \| mnist"),
        ({"model": "resnet"}, r"'model': got 'resnet', allowed: net \| mlp \| cnn"),
        ({"nesterov": True, "momentum": 0}, r"'nesterov'"),
        ({"nesterov": "maybe"}, r"'nesterov': got 'maybe', allowed: true or false"),
        ({"metric": "val/f1"}, r"'metric'"),
        ({"lr_schedule": "warmup-cosine", "warmup_epochs": 3, "epochs": 3}, r"'warmup_epochs'"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


def test_user_factories_pass_validation_by_form() -> None:
    cfg = TrainConfig.from_dict({"model": "mypkg.models:build", "dataset": "mypkg.data:load"})
    assert cfg.model == "mypkg.models:build"
    with pytest.raises(ConfigError, match="package.module:factory"):
        TrainConfig.from_dict({"model": "mypkg.models:"})


def test_data_dir_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGNITE_SWEEP_DATA", "/datasets")
    assert TrainConfig().data_dir == "/datasets"
