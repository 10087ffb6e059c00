"""The W&B backend with only the W&B server mocked (spec=): wandb.sweep, wandb.agent, wandb.Api.

The trial function runs exactly as wandb.agent runs it: WANDB_SWEEP_PARAM_PATH points to a YAML of
{name: {value: v}}, WANDB_RUN_ID is set, and wandb itself runs offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import wandb
import yaml
from conftest import offline_runs
from fake_wandb import hand_run
from wandb.apis.public import Run, Sweep
from wandb_records import records, run_file, summary

from ignite_sweep.backends import backend_for_sweep, choose_backend
from ignite_sweep.backends.wandb import WandbBackend
from ignite_sweep.sweepfile import SWEEP_COMMAND, validate_sweep

pytestmark = pytest.mark.usefixtures("one_thread_per_run")

CONFIG = {
    "method": "random",
    "metric": {"name": "val/accuracy", "goal": "maximize"},
    "parameters": {
        "dataset": {"value": "digits"},
        "epochs": {"value": 1},
        "log_interval": {"value": 50},
        "lr": {"values": [0.02, 0.05]},
    },
}


def fake_agent(tmp: Path, suggestions: list[dict[str, Any]]) -> Any:
    """What wandb.agent does for each run it is handed, minus the server."""

    def agent(sweep_id: str, function: Any = None, entity: Any = None, project: Any = None, count: Any = None) -> None:
        fixed = {k: v["value"] for k, v in CONFIG["parameters"].items() if "value" in v}
        for i, suggestion in enumerate(suggestions[:count]):
            hand_run(tmp, f"wbrun{i:03d}", {**fixed, **suggestion}, function)

    return agent


def api_run(run_id: str, state: str, config: dict, summary_: dict) -> Any:
    run = mock.create_autospec(Run, instance=True)
    run.id, run.state, run.config, run.summary = run_id, state, config, summary_
    return run


@pytest.fixture
def api() -> Any:
    api = mock.create_autospec(wandb.Api, instance=True)
    api.default_entity = "me"
    sweep = mock.create_autospec(Sweep, instance=True)
    sweep.config = validate_sweep(CONFIG)
    sweep.name = "abc123"
    sweep.state = "RUNNING"
    sweep.runs = [  # newest first, as the API lists them
        api_run("r3", "killed", {"lr": 0.05, "_wandb": {}}, {"val/accuracy": 0.7, "status": "stopped"}),
        api_run("r2", "finished", {"lr": 0.05}, {"val/accuracy": 0.93, "status": "finished", "_runtime": 12.0}),
        api_run("r1", "finished", {"lr": 0.02}, {"val/accuracy": 0.88, "status": "finished"}),
        api_run("r0", "crashed", {"lr": 0.02}, {"error": "CUDA out of memory"}),
    ]
    api.sweep.return_value = sweep
    return api


def test_create_registers_the_config_with_a_command(api: Any) -> None:
    with mock.patch.object(wandb, "sweep", autospec=True, return_value="abc123") as sweep, \
         mock.patch.object(wandb, "Api", autospec=True, return_value=api):  # fmt: skip
        sweep_id = WandbBackend().create(validate_sweep(CONFIG), project="digits")
    assert sweep_id == "me/digits/abc123"
    (config,), kwargs = sweep.call_args
    assert kwargs == {"project": "digits", "entity": "me"}
    assert config["command"] == SWEEP_COMMAND and config["parameters"] == CONFIG["parameters"]


def test_agent_trains_each_run_from_wandb_config(offline_wandb: Path) -> None:
    suggestions = [{"lr": 0.05}, {"lr": 0.02}]
    with mock.patch.object(wandb, "agent", autospec=True, side_effect=fake_agent(offline_wandb, suggestions)) as agent:
        result = WandbBackend().run_agent("me/digits/abc123", count=2)
    agent.assert_called_once_with("abc123", function=mock.ANY, entity="me", project="digits", count=2)
    assert result.runs == 2
    runs = offline_runs(offline_wandb)
    assert sorted(d.name[-8:] for d in runs) == ["wbrun000", "wbrun001"]
    for run_dir, params in zip(sorted(runs, key=lambda d: d.name[-8:]), suggestions, strict=True):
        final = summary(run_file(run_dir))
        assert final["status"] == "finished" and final["val/accuracy"] > 0.5
        (run_record,) = [r for r in records(run_file(run_dir)) if r.WhichOneof("record_type") == "run"]
        logged = {item.key: yaml.safe_load(item.value_json) for item in run_record.run.config.update}
        assert logged["lr"] == params["lr"] and logged["dataset"] == "digits"


def test_a_bad_value_from_the_sweep_fails_that_run_only(offline_wandb: Path) -> None:
    suggestions = [{"lr": -1.0}, {"lr": 0.05}]
    with mock.patch.object(wandb, "agent", autospec=True, side_effect=fake_agent(offline_wandb, suggestions)):
        WandbBackend().run_agent("me/digits/abc123", count=2)
    by_id = {d.name[-8:]: summary(run_file(d)) for d in offline_runs(offline_wandb)}
    assert "'lr'" in by_id["wbrun000"]["error"]
    assert by_id["wbrun001"]["status"] == "finished"


def test_runs_and_best_read_through_the_api(api: Any) -> None:
    with mock.patch.object(wandb, "Api", autospec=True, return_value=api):
        backend = WandbBackend()
        runs = backend.runs("me/digits/abc123")
        best = backend.best_run("me/digits/abc123")
        sweep = backend.sweep("me/digits/abc123")
    api.sweep.assert_called_with("me/digits/abc123")
    assert [(r.id, r.state) for r in runs] == [
        ("r0", "crashed"),
        ("r1", "finished"),
        ("r2", "finished"),
        ("r3", "stopped"),
    ]
    assert runs[0].error == "CUDA out of memory" and "_wandb" not in runs[3].config
    assert best is not None and best.id == "r2"
    assert sweep.method == "random" and sweep.metric == "val/accuracy" and sweep.state == "running"


def test_stop_sets_the_sweep_state_as_wandb_sweep_stop_does(api: Any) -> None:
    with mock.patch.object(wandb, "Api", autospec=True, return_value=api), \
         mock.patch("wandb.apis.public.sweeps._set_sweep_state", autospec=True) as set_state:  # fmt: skip
        WandbBackend().stop("me/digits/abc123")
    set_state.assert_called_once_with(api, "abc123", "FINISHED", entity="me", project="digits")


def test_backend_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.delenv("WANDB_MODE")
    assert choose_backend("auto")[0] == "local"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / "netrc").chmod(0o600)
    assert choose_backend("auto") == ("wandb", "a W&B login was found")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert choose_backend("auto") == ("local", "WANDB_MODE=offline")
    assert type(backend_for_sweep("me/p/abc")).__name__ == "WandbBackend"
    assert type(backend_for_sweep("local/abcdefgh")).__name__ == "LocalBackend"


def test_report_reads_wandb_histories_through_the_api(api: Any, tmp_path: Path) -> None:
    from ignite_sweep.report_html import collect, write_html, write_png

    for run in api.sweep.return_value.runs:
        final = run.summary.get("val/accuracy")
        run.scan_history.return_value = [{"epoch": 1, "val/accuracy": 0.5}, {"epoch": 2, "val/accuracy": final}]
    with mock.patch.object(wandb, "Api", autospec=True, return_value=api):
        backend = WandbBackend()
        data = collect(backend.sweep("me/digits/abc123"), backend.runs_with_history("me/digits/abc123"))
    for run in api.sweep.return_value.runs:
        run.scan_history.assert_called_once_with(keys=["val/accuracy", "epoch"])
    assert [r.id for r in data.best_first()][:3] == ["r2", "r1", "r3"]
    assert {r.id: len(r.history) for r in data.runs} == {"r0": 1, "r1": 2, "r2": 2, "r3": 2}
    text = write_html(data, tmp_path / "report.html").read_text()
    assert "r2 (best)" in text and "r3 (stopped)" in text
    assert write_png(data, tmp_path / "report.png").stat().st_size > 10_000


def test_ctrl_c_ends_a_wandb_run_interrupted_with_a_nonzero_exit(offline_wandb: Path) -> None:
    """Ctrl-C (not W&B's stop, which is a SIGTERM) during a W&B sweep run: the summary says `interrupted`
    and the run exits non-zero, so W&B's controller sees unfinished work; it decides whether to offer it
    again. The trial runs as `wandb agent` starts it: its own process, params in WANDB_SWEEP_PARAM_PATH."""
    import json
    import os
    import signal
    import subprocess
    import sys

    params = offline_wandb / "params.yaml"
    params.write_text(yaml.safe_dump({k: {"value": v} for k, v in {
        "dataset": "digits", "epochs": 20, "log_interval": 50, "lr": 0.05}.items()}))  # fmt: skip
    env = {**os.environ, "WANDB_SWEEP_PARAM_PATH": str(params), "WANDB_RUN_ID": "wbint001",
           "IGNITE_SWEEP_EVENTS": "1"}  # fmt: skip
    trial = subprocess.Popen([sys.executable, "-c", "from ignite_sweep.backends.wandb import trial; trial()"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert trial.stdout is not None
    for line in trial.stdout:  # the first evaluation's event: the run is training
        if '"event": "eval"' in line:
            break
    trial.send_signal(signal.SIGINT)
    out, err = trial.communicate(timeout=120)
    assert trial.returncode == 0, err
    end = json.loads(next(line for line in out.splitlines() if '"event": "end"' in line).split(" ", 1)[1])
    assert end["state"] == "interrupted"
    (run_dir,) = offline_runs(offline_wandb)
    final = summary(run_file(run_dir))
    assert final["status"] == "interrupted" and 1 <= final["epochs_completed"] < 20
    (exit_record,) = [r for r in records(run_file(run_dir)) if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit.exit_code == 1
