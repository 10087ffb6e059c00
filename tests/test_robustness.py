"""Regression tests for what new users hit first (issue: no traceback, ever). Each would fail on the code
before its fix: a missing dependency, numpy scalars from the engine, sweeps that `create` accepted but that
could never run, a binary file, schema errors that said neither where nor why, a completed run shown as
`stopped`, names from public sweep files left without a suggestion, and bugs shown as tracebacks."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib
import yaml
from sweep_helpers import cli, sweep_file

from ignite_sweep import cli as ignite_cli
from ignite_sweep.backends.local import LocalBackend
from ignite_sweep.engine import next_params
from ignite_sweep.sweepfile import validate_sweep
from ignite_sweep.training.config import TrainConfig, unknown_key_message
from ignite_sweep.training.train import train

REPO = Path(__file__).resolve().parents[1]
INDIRECT = {"tqdm": "Ignite's ProgressBar, attached when stderr is a terminal"}
"""Modules the package needs that its own code never names in an import."""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_import_is_a_declared_dependency() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = [d for name, deps in pyproject["project"]["optional-dependencies"].items() if name != "dev" for d in deps]
    declared = {_normalise(re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0])
                for d in pyproject["project"]["dependencies"] + extras}  # an extra (optuna): asked for by name
    imported = set(INDIRECT)
    for path in (REPO / "ignite_sweep").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"ignite_sweep"}
    owners = packages_distributions()
    missing = {m: owners.get(m) for m in third_party if not {_normalise(d) for d in owners.get(m, [])} & declared}
    assert not missing, f"imported but not in pyproject's dependencies: {missing}"


@pytest.mark.parametrize(
    "spec",
    [{"distribution": "q_uniform", "min": 32, "max": 128, "q": 32},
     {"distribution": "int_uniform", "min": 16, "max": 64},
     {"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 16}],
)  # fmt: skip
def test_engine_values_reach_the_store_as_plain_python(offline_wandb: Path, spec: dict) -> None:
    config = validate_sweep({"method": "random", "parameters": {"batch_size": spec, "dataset": {"value": "digits"}}})
    params, _ = next_params(config, [])
    assert type(params["batch_size"]) in (int, float) and float(params["batch_size"]).is_integer()
    backend = LocalBackend()
    sweep_id = backend.create(config)
    run, reason = backend.claim(sweep_id)  # stored as JSON: numpy's int64 made this raise
    assert run is not None, reason
    stored = backend.store.run(run["id"])["config"]["batch_size"]
    assert TrainConfig.from_dict({"batch_size": stored}).batch_size == int(stored)  # 64.0 is accepted as 64


@pytest.mark.parametrize(
    ("parameters", "method", "needle"),
    [
        ({"lr": {"min": 0.001, "max": 0.1}}, "grid",
         "key 'parameters.lr': grid needs values, int_uniform or q_uniform, got min/max"),
        ({"batch_size": {"distribution": "uniform", "min": 16, "max": 128}}, "random",
         "key 'parameters.batch_size': an integer; distribution uniform draws non-whole numbers"),
        ({"momentum": {"distribution": "normal", "mu": 0.9, "sigma": 0.05}}, "random",
         "key 'parameters.momentum': got 1.1"),
        ({"optimizer": {"distribution": "uniform", "min": 0, "max": 1}}, "random",
         "key 'parameters.optimizer': a choice needs value or values, got distribution uniform"),
        ({"nesterov": {"values": [True]}, "momentum": {"values": [0.0, 0.5]}}, "grid",
         "key 'parameters.nesterov': needs optimizer 'sgd' and momentum > 0 (the engine's suggestion"),
        ({"seed": {"distribution": "int_uniform", "min": 0, "max": 2_000_000}}, "grid",
         "key 'parameters': a grid of 2,000,001 points; at most 1,000,000"),
        ({"lr": {"value": 0.1}}, "bayes", "key 'parameters': bayes needs a parameter that varies"),
        ({"epochs": {"values": []}}, "grid", "key 'parameters.epochs.values': got [], allowed: a list of at least 1"),
        ({"lr": {"distribution": "gauss", "min": 0.1, "max": 1}}, "random",
         "key 'parameters.lr.distribution': got 'gauss', allowed: beta | categorical |"),
        ({"lr": {"distribution": "normal", "mu": 0.1, "sigma": "wide"}}, "random",
         "key 'parameters.lr.sigma': got 'wide', allowed: a number (distribution normal)"),
    ],
)  # fmt: skip
def test_create_refuses_what_can_never_run_in_one_line(offline_wandb: Path, parameters: dict, method: str,
                                                       needle: str) -> None:  # fmt: skip
    path = sweep_file(offline_wandb, method=method, parameters=parameters)
    result = cli("create", str(path), "--backend", "local")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error: {path}: {needle}"), result.stderr


def test_hyperband_without_its_bounds_names_early_terminate(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, early_terminate={"type": "hyperband"})
    result = cli("create", str(path), "--backend", "local")
    assert result.returncode == 1
    assert result.stderr == f"error: {path}: key 'early_terminate': needs one of: max_iter and s | min_iter\n"


def test_a_binary_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)))
    result = cli("create", str(path), "--backend", "local")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path}: not a UTF-8 text file (byte 0x80 at offset 128)")
    assert result.stderr.count("\n") == 1


def test_deprecated_distribution_is_accepted_with_a_warning(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, method="random",
                      parameters={"lr": {"distribution": "log_uniform", "min": -7, "max": -2}})  # fmt: skip
    result = cli("create", str(path), "--backend", "local")
    assert result.returncode == 0, result.stderr
    assert f"warning: {path}: key 'parameters.lr': uses log_uniform" in result.stderr


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("learning_rate", "lr"), ("num_epochs", "epochs"), ("bs", "batch_size"), ("train_batch_size", "batch_size"),
     ("wd", "weight_decay"), ("opt", "optimizer"), ("optim", "optimizer"), ("learning-rate", "lr"),
     ("lr_rate", "lr"), ("momentun", "momentum")],
)  # fmt: skip
def test_names_from_public_sweep_files_get_a_suggestion(name: str, suggestion: str) -> None:
    from ignite_sweep.sweepfile import _FIELDS

    assert unknown_key_message(name, sorted(_FIELDS), "parameter").endswith(f"did you mean '{suggestion}'?")


def test_a_run_that_did_every_epoch_is_finished_though_the_stop_came_after(offline_wandb: Path) -> None:
    """Hyperband's verdict on the last evaluation arrives after the last epoch: nothing was cut short."""
    fast = {"dataset": "digits", "log_interval": 50, "val_batch_size": 512}
    done = train(TrainConfig.from_dict({**fast, "epochs": 1}), reporter=lambda metrics: True)
    assert done["status"] == "finished" and done["epochs_completed"] == 1
    cut = train(TrainConfig.from_dict({**fast, "epochs": 2}), reporter=lambda metrics: True)
    assert cut["status"] == "stopped" and cut["epochs_completed"] == 1


def test_a_bug_is_one_line_with_its_traceback_in_a_file(offline_wandb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something no user can fix\nsecond line")

    monkeypatch.setattr("ignite_sweep.sweepfile.load_sweep", broken)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = ignite_cli.run(["create", str(sweep_file(offline_wandb)), "--backend", "local"])
    assert code == 1
    line = err.getvalue()
    match = re.fullmatch(r"error: RuntimeError: something no user can fix \(traceback: (.+)\)\n", line)
    assert match, line
    log = Path(match.group(1))
    assert log.parent == offline_wandb / ".ignite-sweep" / "logs"
    assert "Traceback (most recent call last)" in log.read_text() and "second line" in log.read_text()


def test_usage_errors_are_one_line(offline_wandb: Path) -> None:
    result = cli("agent", "local/abcdefgh", "--count", "0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "'--count'" in result.stderr and "ignite-sweep agent --help" in result.stderr


def test_train_module_backstop(tmp_path: Path) -> None:
    """A user factory that raises is one line from `python -m ignite_sweep.train`, its traceback in a file."""
    (tmp_path / "bad_models.py").write_text("def net(*args, **kwargs):\n    raise ValueError('no such layer')\n")
    result = subprocess.run(
        [sys.executable, "-m", "ignite_sweep.train", "--dataset=digits", "--model=bad_models:net", "--epochs=1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**dict(__import__("os").environ), "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no such layer" in errors[0] and "Traceback" not in result.stderr, result.stderr


def test_status_json_of_a_q_uniform_sweep_round_trips(offline_wandb: Path) -> None:
    batch_size = {"distribution": "q_uniform", "min": 32, "max": 128, "q": 32}
    path = sweep_file(offline_wandb, method="random", run_cap=1, parameters={"batch_size": batch_size})
    created = cli("run", str(path), "--backend", "local")
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip().splitlines()[-1]
    runs = json.loads(cli("status", sweep_id, "--json").stdout)["runs"]
    assert [r["state"] for r in runs] == ["finished"] and runs[0]["config"]["batch_size"] in (32, 64, 96, 128)
    assert yaml.safe_load(cli("best", sweep_id).stdout)["batch_size"] == runs[0]["config"]["batch_size"]
