"""Resume from checkpoint: a crashed or preempted run's retry goes on from the last epoch it saved, with the same
config; its history continues (each epoch once) and only the missing epochs train. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import cli, create, start_agent, store_runs, sweep_file, wait_for

from ignite_sweep.training.config import TrainConfig
from ignite_sweep.training.train import train
from ignite_sweep.wandb_file import history, run_file

EPOCHS = 5


def five_epoch_sweep(folder: Path) -> str:
    return create(sweep_file(folder, parameters={"epochs": {"value": EPOCHS}, "lr": {"values": [0.05]}}))


def wait_for_evaluations(sweep_id: str, n: int) -> dict:
    return wait_for(lambda: next((r for r in store_runs(sweep_id)
                                  if r["state"] == "running" and r["pid"] and len(r["history"]) >= n), None),
                    what=f"a running run with {n} evaluations")  # fmt: skip


def check_resumed(sweep_id: str, first_state: str) -> None:
    first, retry = store_runs(sweep_id)
    assert first["state"] == first_state and retry["retry_of"] == first["id"], (first, retry)
    resumed = retry["resumed_epoch"]
    assert resumed is not None and resumed >= 2 and resumed <= len(first["history"])
    assert [h["epoch"] for h in retry["history"]] == list(range(1, EPOCHS + 1))  # each epoch once
    assert retry["state"] == "finished" and retry["summary"]["epochs_completed"] == EPOCHS
    assert retry["summary"]["resumed_epoch"] == resumed
    assert first["wandb_id"] == first["id"] and retry["wandb_id"] == first["id"]  # one W&B run, resumed
    logged = [r["epoch"] for r in history(run_file(Path(retry["run_dir"]))) if "val/accuracy" in r]
    assert logged == list(range(resumed + 1, EPOCHS + 1))  # only the missing epochs trained
    status = json.loads(cli("status", sweep_id, "--json").stdout)["runs"]
    assert [(r["resumed_epoch"], r["epoch"], r["wandb_id"]) for r in status] == [
        (None, len(first["history"]), first["id"]), (resumed, EPOCHS, first["id"])]


def test_a_run_killed_after_its_second_evaluation_resumes_from_its_checkpoint(
    store_url: str, offline_wandb: Path
) -> None:
    sweep_id = five_epoch_sweep(offline_wandb)
    agent = start_agent(sweep_id)
    victim = wait_for_evaluations(sweep_id, 2)
    os.kill(victim["pid"], signal.SIGKILL)
    _, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err
    check_resumed(sweep_id, "crashed")


def test_a_preempted_agents_run_resumes_in_the_next_agent(store_url: str, offline_wandb: Path) -> None:
    """SIGTERM to the agent (a cluster scheduler preempting it): the run is interrupted; the next agent, here or
    on another node, resumes it from its last checkpoint."""
    sweep_id = five_epoch_sweep(offline_wandb)
    agent = start_agent(sweep_id)
    wait_for_evaluations(sweep_id, 2)
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=300)
    assert agent.returncode == 130, err
    assert store_runs(sweep_id)[0]["state"] == "interrupted"
    result = cli("agent", sweep_id, env={**os.environ, "IGNITE_SWEEP_HOST": "another-node"})
    assert result.returncode == 0, result.stderr
    check_resumed(sweep_id, "interrupted")


def test_a_resumed_run_is_one_wandb_run_after_sync(wandb_standin: Any, offline_wandb: Path) -> None:
    """The crashed run and its resumed retry logged offline to the same W&B run id (``resume="allow"``), each in
    a folder of its own; ``ignite-sweep sync`` (the real ``wandb sync``, to the stand-in) makes them one run:
    every epoch's evaluation once, steps increasing, the retry's final summary."""
    sweep_id = five_epoch_sweep(offline_wandb)
    agent = start_agent(sweep_id)
    os.kill(wait_for_evaluations(sweep_id, 2)["pid"], signal.SIGKILL)
    _, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err
    check_resumed(sweep_id, "crashed")
    first, retry = store_runs(sweep_id)
    assert len(list((offline_wandb / "wandb").glob(f"offline-run-*-{first['id']}"))) == 2
    result = cli("sync", sweep_id, "--project", "digits")
    assert result.returncode == 0, result.stderr
    assert list(wandb_standin.runs) == [first["id"]]
    run = wandb_standin.runs[first["id"]]
    evaluations = [row for row in run.history if "val/accuracy" in row]
    assert [row["epoch"] for row in evaluations] == list(range(1, EPOCHS + 1)), run.history
    steps = [row["_step"] for row in run.history]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert run.state == "finished" and run.summary["epochs_completed"] == EPOCHS
    assert run.summary["val/accuracy"] == retry["summary"]["val/accuracy"]


def test_a_checkpoint_that_cannot_be_read_means_a_fresh_start(offline_wandb: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    broken = offline_wandb / "broken"
    broken.mkdir()
    (broken / "resume_checkpoint_3.pt").write_bytes(b"not a checkpoint")
    cfg = TrainConfig.from_dict({"dataset": "digits", "epochs": 2, "log_interval": 50})
    summary = train(cfg, resume_from=broken, checkpoint_dir=offline_wandb / "own")
    assert summary["resumed_epoch"] is None and summary["epochs_completed"] == 2
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "could not be read" in err and "starting from epoch 0" in err
    assert sorted(p.name for p in (offline_wandb / "own").iterdir()) == ["resume_checkpoint_2.pt"]
