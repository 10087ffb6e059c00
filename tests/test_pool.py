"""Parallel agents on the CPU: real slot processes, a real SQLite store, real training on digits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sweep_helpers import cli, create, store_runs, sweep_file, wait_for, wait_for_evaluating_run

from ignite_sweep.errors import ConfigError
from ignite_sweep.execution.pool import plan_slots


def start_pool(sweep_id: str, *args: str, env: dict | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ignite_sweep", "agent", sweep_id, "--stagger", "0.2", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_plan_splits_cores_and_names_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [(s.name, s.gpu, s.threads) for s in plan_slots(None, 1, 2, cores=8)] == [
        ("cpu0", None, 4),
        ("cpu1", None, 4),
    ]
    monkeypatch.setenv("IGNITE_SWEEP_GPU_INVENTORY", "0,1,2")
    slots = plan_slots("0,2", 2, None, cores=16)
    assert [(s.name, s.gpu, s.threads) for s in slots] == [
        ("gpu0.0", "0", 4), ("gpu0.1", "0", 4), ("gpu2.0", "2", 4), ("gpu2.1", "2", 4)
    ]  # fmt: skip
    assert slots[0].env()["CUDA_VISIBLE_DEVICES"] == "0" and slots[0].env()["IGNITE_SWEEP_THREADS"] == "4"
    assert [s.gpu for s in plan_slots("all", 1, None, cores=3)] == ["0", "1", "2"]
    with pytest.raises(ConfigError, match=r"option '--gpus': GPU 5 does not exist \(found: 0, 1, 2\)"):
        plan_slots("0,5", 1, None)
    with pytest.raises(ConfigError, match=r"option '--gpus': got 'first'"):
        plan_slots("first", 1, None)
    monkeypatch.setenv("IGNITE_SWEEP_GPU_INVENTORY", "")
    with pytest.raises(ConfigError, match=r"option '--gpus': no CUDA GPU found"):
        plan_slots("all", 1, None)


def test_gpus_without_cuda_is_one_line(offline_wandb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGNITE_SWEEP_GPU_INVENTORY", "")
    sweep_id = create(sweep_file(offline_wandb))
    result = cli("agent", sweep_id, "--gpus", "all")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "no CUDA GPU found" in result.stderr


def test_the_live_table_has_a_row_per_running_run_of_a_slot() -> None:
    """A slot's agent with --fuse trains several runs at once: each is a row (the slot named once), until it ends."""
    from ignite_sweep.execution.pool import PoolView, Running, Slot, SlotState

    slots = [SlotState(Slot("cpu0", None, 1)), SlotState(Slot("cpu1", None, 1))]
    slots[0].runs = {"r1": Running({"lr": 0.1}, 2, 0.91), "r2": Running({"lr": 0.2}, 2, 0.85)}
    view = PoolView("val/accuracy", "maximize", slots, swept=["lr"])
    columns = [[str(cell) for cell in column._cells] for column in view.table().columns]
    rows = list(zip(*columns, strict=True))
    assert [row[:5] for row in rows] == [("cpu0", "-", "r1", "lr=0.1", "2"), ("", "", "r2", "lr=0.2", "2"),
                                         ("cpu1", "-", "-", "", "")]  # fmt: skip
    assert rows[0][5:] == ("0.91", "running") and rows[1][5:] == ("0.85", "")


def test_two_workers_run_every_grid_point_once(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"lr": {"values": [0.01, 0.02, 0.03, 0.04]}})
    sweep_id = create(path)
    pool = start_pool(sweep_id, "--workers", "2")
    out, err = pool.communicate(timeout=300)
    assert pool.returncode == 0, err
    runs = store_runs(sweep_id)
    assert Counter(r["config"]["lr"] for r in runs) == {0.01: 1, 0.02: 1, 0.03: 1, 0.04: 1}
    assert {r["state"] for r in runs} == {"finished"}
    assert {r["slot"] for r in runs} == {"cpu0", "cpu1"}  # both slots ran runs, as the records say
    assert "pool done: 2 slots, 4 finished" in out and "[cpu1] run" in out


def test_gpu_slots_each_see_only_their_gpu(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"lr": {"values": [0.01, 0.02, 0.03, 0.04]}})
    sweep_id = create(path)
    pool = start_pool(sweep_id, "--gpus", "0,1", env={"IGNITE_SWEEP_GPU_INVENTORY": "0,1"})
    _, err = pool.communicate(timeout=300)
    assert pool.returncode == 0, err
    runs = store_runs(sweep_id)
    assert len(runs) == 4
    for run in runs:  # what each run's own process saw, against the slot it was planned on
        assert run["summary"]["cuda_visible_devices"] == run["gpu"] == run["slot"][len("gpu") :]
    assert {r["gpu"] for r in runs} == {"0", "1"}


def test_kill_9_of_a_workers_run_retries_it_and_the_sweep_completes(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"epochs": {"value": 2}, "lr": {"values": [0.01, 0.02, 0.03]}})
    sweep_id = create(path)
    pool = start_pool(sweep_id, "--workers", "2")
    victim = wait_for_evaluating_run(sweep_id)
    os.kill(victim["pid"], signal.SIGKILL)
    _, err = pool.communicate(timeout=300)
    assert pool.returncode == 0, err
    runs = store_runs(sweep_id)
    crashed = next(r for r in runs if r["id"] == victim["id"])
    assert crashed["state"] == "crashed"
    retry = next(r for r in runs if r["retry_of"] == victim["id"])
    assert retry["state"] == "finished" and retry["config"] == victim["config"]
    assert sorted(r["config"]["lr"] for r in runs if r["state"] == "finished") == [0.01, 0.02, 0.03]


def test_a_dead_slot_agent_is_restarted_and_its_run_offered_again(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"epochs": {"value": 2}, "lr": {"values": [0.01, 0.02]}})
    sweep_id = create(path)
    pool = start_pool(sweep_id, "--workers", "1")
    victim = wait_for_evaluating_run(sweep_id)
    agent_pid = int(open(f"/proc/{victim['pid']}/stat").read().split(")")[1].split()[1])  # the run's parent
    os.kill(agent_pid, signal.SIGKILL)  # the slot agent dies; its run dies with it
    out, err = pool.communicate(timeout=300)
    assert pool.returncode == 0, err
    assert "slot agent died (signal 9): restarting (1/3)" in out
    runs = store_runs(sweep_id)
    assert next(r for r in runs if r["id"] == victim["id"])["state"] == "crashed"
    assert sorted(r["config"]["lr"] for r in runs if r["state"] == "finished") == [0.01, 0.02]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_interrupts_every_slot_and_a_new_agent_finishes_the_work(offline_wandb: Path,
                                                                                   signum: int) -> None:  # fmt: skip
    path = sweep_file(offline_wandb, parameters={"epochs": {"value": 8}, "lr": {"values": [0.01, 0.02, 0.03]}})
    sweep_id = create(path)
    pool = start_pool(sweep_id, "--workers", "2", "--stagger", "0")
    wait_for(lambda: sum(1 for r in store_runs(sweep_id) if r["history"]) == 2, what="both slots evaluating")
    pool.send_signal(signum)  # Ctrl-C, or a cluster preempting the job
    out, err = pool.communicate(timeout=120)
    assert pool.returncode == 130, err
    runs = store_runs(sweep_id)
    assert len(runs) == 2 and {r["state"] for r in runs} == {"interrupted"}, runs
    assert all(r["summary"]["epochs_completed"] < 8 for r in runs) and "2 interrupted" in out
    agent = cli("agent", sweep_id, "--count", "2")  # the work goes on: both interrupted runs first
    assert agent.returncode == 0, agent.stderr
    reruns = [r for r in store_runs(sweep_id) if r["retry_of"]]
    assert sorted(r["retry_of"] for r in reruns) == sorted(r["id"] for r in runs)
    assert {r["state"] for r in reruns} == {"finished"} and len(store_runs(sweep_id)) == 4
