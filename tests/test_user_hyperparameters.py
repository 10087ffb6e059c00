"""The built-in trainer with the user's own hyperparameters: keys that are no TrainConfig field go to the user
model/dataset factory that takes them by name; a W&B nested parameter arrives as a dict of the same name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sweep_helpers import store_runs

from ignite_sweep.errors import ConfigError
from ignite_sweep.training.config import TrainConfig

MODELS = '''
import json
import torch

def mlp(in_channels, image_size, num_classes, dropout, width=64, arch=None):
    with open("built.jsonl", "a") as f:
        f.write(json.dumps({"width": width, "arch": arch}) + "\\n")
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size[0] * image_size[1], width), torch.nn.ReLU(),
        torch.nn.Dropout(dropout), torch.nn.Linear(width, num_classes), torch.nn.LogSoftmax(dim=-1))

def anything(in_channels, image_size, num_classes, dropout, **options):
    return mlp(in_channels, image_size, num_classes, dropout, width=options.get("width", 8))
'''


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "user_models.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def ignite_sweep_script() -> list[str]:
    """The console script, as the README runs it: its sys.path has the venv's bin folder, not the cwd."""
    script = Path(sys.executable).parent / "ignite-sweep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ignite_sweep"]


def sweep(folder: Path, **params: dict) -> Path:
    body = {"method": "grid", "metric": {"name": "val/accuracy", "goal": "maximize"},
            "parameters": {"dataset": {"value": "digits"}, "epochs": {"value": 1}, "log_interval": {"value": 50},
                           "model": {"value": "user_models:mlp"}, **params}}  # fmt: skip
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_a_sweep_over_a_user_factorys_own_parameter_reaches_the_factory(user_models: Path) -> None:
    path = sweep(user_models, width={"values": [16, 48]}, arch={"parameters": {"depth": {"values": [2]}}})
    result = subprocess.run([*ignite_sweep_script(), "run", str(path), "--backend", "local"],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    sweep_id = result.stdout.strip().splitlines()[-1]
    runs = store_runs(sweep_id)
    assert [r["state"] for r in runs] == ["finished", "finished"], [r["error"] for r in runs]
    assert [r["config"]["width"] for r in runs] == [16, 48]
    built = [json.loads(line) for line in (user_models / "built.jsonl").read_text().splitlines()]
    assert {b["width"] for b in built} == {16, 48} and all(b["arch"] == {"depth": 2} for b in built)


def test_a_misspelt_user_parameter_is_refused_at_create_with_a_suggestion(user_models: Path) -> None:
    path = sweep(user_models, widht={"values": [16, 48]})
    result = subprocess.run([*ignite_sweep_script(), "create", str(path), "--backend", "local"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {path}: unknown parameter 'widht'; did you mean 'width'?"


def test_train_config_routes_user_keys_to_the_factory_that_takes_them(user_models: Path) -> None:
    cfg = TrainConfig.from_dict({"model": "user_models:mlp", "width": 32, "lr": 0.1})
    assert cfg.factory_kwargs("model") == {"width": 32} and cfg.factory_kwargs("dataset") == {}
    assert cfg.to_dict()["width"] == 32 and "factory_args" not in cfg.to_dict()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # wandb.config round trip
    assert TrainConfig.from_dict({"model": "user_models:anything", "depth": 3}).factory_kwargs("model") == {"depth": 3}
    with pytest.raises(ConfigError, match="unknown hyperparameter 'width'"):
        TrainConfig.from_dict({"width": 32})  # the built-in model takes no width
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        TrainConfig.from_dict({"model": "user_models:mlp", "widht": 32})


def test_train_from_the_command_line_with_a_user_parameter(user_models: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ignite_sweep.train", "--dataset=digits", "--epochs=1",
                             "--model=user_models:mlp", "--width=24"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((user_models / "built.jsonl").read_text().splitlines()[-1])["width"] == 24


def test_a_user_loss_trains_the_model_and_is_the_evaluators_loss(user_models: Path) -> None:
    (user_models / "user_losses.py").write_text(
        "import torch.nn.functional as F\n"
        "def smooth_nll(output, target):\n"
        "    open('loss_called', 'w').close()\n"
        "    return F.nll_loss(output, target) + 100.0\n"
    )
    from ignite_sweep.training.train import train

    summary = train(TrainConfig.from_dict({"dataset": "digits", "epochs": 1, "log_interval": 50,
                                           "loss": "user_losses:smooth_nll"}))  # fmt: skip
    assert (user_models / "loss_called").exists() and summary["status"] == "finished"
    assert summary["val/loss"] > 100  # the evaluator's loss is the user's too
    with pytest.raises(ConfigError, match="hyperparameter 'loss': got 'huber', allowed: nll | cross_entropy"):
        TrainConfig.from_dict({"loss": "huber"})
