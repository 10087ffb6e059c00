"""ignite-sweep's own W&B agent loop (ignite_sweep/backends/wandb_agent.py) against the W&B API stand-in: when it
heartbeats. The next run is asked for as soon as a run ends; while a run trains, never more often than W&B's own
agents heartbeat. Times come from the stand-in's heartbeat log (when each heartbeat arrived, which runs it reported
live) and from the run's offline folder (when its .wandb file was last written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import offline_runs

from ignite_sweep.backends.wandb import WandbBackend
from ignite_sweep.sweepfile import validate_sweep

FAST = {"dataset": {"value": "digits"}, "epochs": {"value": 1}, "batch_size": {"value": 256},
        "val_batch_size": {"value": 512}, "log_interval": {"value": 50}}  # fmt: skip


def _sweep(**parameters: Any) -> dict[str, Any]:
    return validate_sweep({"method": "grid", "metric": {"name": "val/accuracy", "goal": "maximize"},
                           "parameters": {**FAST, **parameters}})  # fmt: skip


def _ended_at(root: Path, run_id: str) -> float:
    """When the run's .wandb file was last written: its exit record, at the run's finish."""
    (run_dir,) = [d for d in offline_runs(root) if d.name.endswith(run_id)]
    return (run_dir / f"run-{run_id}.wandb").stat().st_mtime


def test_the_next_run_is_asked_for_as_soon_as_a_run_ends(
    wandb_standin: Any, offline_wandb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a 60 s heartbeat interval, two short runs and the controller's final exit take seconds, not minutes:
    the heartbeat after each run's end arrives within a second of it, reporting no run live."""
    monkeypatch.setenv("IGNITE_SWEEP_WANDB_HEARTBEAT_S", "60")
    backend = WandbBackend()
    sweep_id = backend.create(_sweep(lr={"values": [0.05, 0.02]}), project="digits")
    assert backend.run_agent(sweep_id).runs == 2
    beats = wandb_standin.heartbeats
    runs = [r.name for r in sorted(wandb_standin.runs.values(), key=lambda r: r.created)]
    assert len(runs) == 2 and [live for _, live in beats] == [[], [], []], beats  # no heartbeat while training
    for run_id, (asked_at, _) in zip(runs, beats[1:], strict=True):
        ended = _ended_at(offline_wandb, run_id)
        assert 0 <= asked_at - ended < 1.0, (run_id, asked_at - ended)
    assert beats[-1][0] - beats[0][0] < 60  # both runs and the exit within one interval


def test_a_running_runs_heartbeats_are_no_more_frequent_than_w_and_bs_agents(
    wandb_standin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a run trains, heartbeats come W&B's agents' interval apart (pyagent's HEARTBEAT_SLEEP_SECONDS, 5 s,
    followed here at 0.5 s to keep the test short), each reporting the run live; only the one after its end is
    sooner."""
    from wandb.agents import pyagent

    from ignite_sweep.backends.wandb_agent import wandb_interval

    monkeypatch.delenv("IGNITE_SWEEP_WANDB_HEARTBEAT_S")
    assert wandb_interval() == pyagent.Agent.HEARTBEAT_SLEEP_SECONDS == 5  # W&B's own, by default
    monkeypatch.setattr(pyagent.Agent, "HEARTBEAT_SLEEP_SECONDS", 0.5)
    backend = WandbBackend()
    sweep_id = backend.create(_sweep(epochs={"value": 6}, lr={"value": 0.05}), project="digits")
    assert backend.run_agent(sweep_id).runs == 1
    beats = wandb_standin.heartbeats
    (run_id,) = wandb_standin.runs
    while_running = [i for i, (_, live) in enumerate(beats) if live == [run_id]]
    assert len(while_running) >= 2, beats  # the run trained through several intervals
    for i in while_running:
        assert beats[i][0] - beats[i - 1][0] >= 0.5, [round(t - beats[0][0], 2) for t, _ in beats]
    assert beats[-1][1] == [] and while_running[-1] == len(beats) - 2  # then one heartbeat after its end: exit
