from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import cli, sweep_file

from ignite_sweep.errors import ConfigError
from ignite_sweep.sweepfile import SWEEP_COMMAND, load_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["quickstart.yaml", "lr.yaml", "grid.yaml"])
def test_shipped_sweep_files_are_valid(name: str) -> None:
    config = load_sweep(REPO / "sweeps" / name)
    assert config["command"] == SWEEP_COMMAND and config["metric"]["name"] == "val/accuracy"


def test_own_command_is_kept(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, command=["python", "train.py", "${args}"])
    assert load_sweep(path)["command"] == ["python", "train.py", "${args}"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "grud"}, r"key 'method': got 'grud', allowed: grid \| random \| bayes"),
        (
            {"parameters": {"optimiser": {"values": ["sgd"]}}},
            r"unknown parameter 'optimiser'; did you mean 'optimizer'",
        ),
        (
            {"metric": {"name": "val/acc", "goal": "maximize"}},
            r"key 'metric.name': got 'val/acc'.*did you mean 'val/accuracy'",
        ),
        ({"metric": {"name": "val/loss", "goal": "down"}}, r"key 'metric.goal': got 'down', allowed: minimize \| maximize"),  # noqa: E501
        (
            {"parameters": {"lr": {"values": [0.1, -1]}}},
            r"key 'parameters.lr': got -1.0, allowed: a number > 0",
        ),
        (
            {"parameters": {"optimizer": {"value": "rmsprop"}}},
            r"key 'parameters.optimizer'.*sgd \| adam \| adamw",
        ),
        (
            {"method": "random", "parameters": {"lr": {"distribution": "uniform", "min": 0.0, "max": 0.1}}},
            r"'parameters.lr': got 0.0",
        ),
        ({"parameters": {"lr": 0.1}}, r"key 'parameters.lr': expected a mapping"),
        ({"method": "bayes", "metric": None}, r"key 'metric'"),
    ],
)
def test_bad_sweeps_name_the_key(tmp_path: Path, change: dict, message: str) -> None:
    config = {k: v for k, v in change.items() if v is not None}
    path = sweep_file(tmp_path, **config)
    if change.get("metric", 1) is None:
        import yaml

        body = yaml.safe_load(path.read_text())
        body.pop("metric")
        path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError, match=message) as info:
        load_sweep(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_yaml_syntax_error_shows_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("method: grid\nparameters:\n  lr:\n    values: [0.1, 0.2\n  epochs: {value: 1}\n")
    with pytest.raises(ConfigError, match=rf"{path}:5:\d+: invalid YAML"):
        load_sweep(path)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("method: grid\nparameters: {lr: {values: [0.1, 0.2}\n", "invalid YAML"),
        (
            "method: grid\nparameters: {lr_rate: {values: [0.1]}}\n",
            "unknown parameter 'lr_rate'; did you mean 'lr'",
        ),
        ("method: grid\nmetric: {name: accuracy}\nparameters: {lr: {values: [0.1]}}\n", "key 'metric.name'"),
        ("method: hyperopt\nparameters: {lr: {values: [0.1]}}\n", "key 'method'"),
    ],
)
def test_cli_create_rejects_bad_yaml_in_one_line(tmp_path: Path, body: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    result = cli("create", str(path), "--backend", "local")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and needle in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_missing_file_and_bad_backend(tmp_path: Path) -> None:
    result = cli("create", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "nope.yaml: No such file" in result.stderr
    result = cli("create", str(sweep_file(tmp_path)), "--backend", "cloud")
    assert result.returncode == 1 and "option '--backend': got 'cloud', allowed: auto | local | wandb" in result.stderr
