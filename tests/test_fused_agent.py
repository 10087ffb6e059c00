"""Fused runs through the real agent and store (`agent --fuse K`): the agent claims K runs and trains those that
share the architecture together in one process, each one still a run of its own (its row, history, wandb run and
end), equal to the same run trained alone; a run that cannot join trains alone with a line saying why."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from conftest import cuda_available
from sweep_helpers import cli, create, start_agent, store_runs, sweep_file, wait_for

from ignite_sweep.execution.process import EVENT_PREFIX

# runs reproducible to 1e-4 under a change of float rounding (a vmapped matmul sums in another order, as another thread
# count does): the MLP at these lrs, 1e-7 apart fused or alone on 1 or 2 threads; not the seed's Net, which at lr 0.01
# is mid-breakout after one epoch (alone, its val/accuracy is 0.791 on 2 threads and 0.786 on 1)
GRID = {"model": {"value": "mlp"}, "batch_size": {"values": [64, 128]}, "lr": {"values": [0.01, 0.012]}}


def by_config(runs: list[dict]) -> dict[tuple, dict]:
    return {(r["config"]["batch_size"], r["config"]["lr"]): r for r in runs}


def test_fused_runs_are_runs_of_their_own_equal_to_unfused_ones(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, parameters=GRID)
    fused_id, alone_id = create(path), create(path)
    fused = cli("agent", fused_id, "--fuse", "3", env={**os.environ, "IGNITE_SWEEP_EVENTS": "1"})  # as a pool slot
    assert fused.returncode == 0, fused.stderr
    assert cli("agent", alone_id).returncode == 0

    runs, alone = by_config(store_runs(fused_id)), by_config(store_runs(alone_id))
    assert set(runs) == set(alone) and len(runs) == 4
    assert all(r["state"] == "finished" for r in [*runs.values(), *alone.values()])
    # the first 3 claimed: two of one batch size trained as one group, the third alone with a line saying why
    together = [r for r in runs.values() if r["summary"].get("fused") == 2]
    assert len(together) == 2 and len({r["config"]["batch_size"] for r in together}) == 1
    assert together[0]["pid"] == together[1]["pid"]  # one process
    assert fused.stderr.count("trains alone: different architecture-shaping hyperparameters: batch_size") == 1
    assert fused.stderr.count("(trains with 2 more)") == 3
    for key, run in runs.items():  # each its own evaluations and wandb run, equal to the run trained alone
        assert len(run["history"]) == 1 and run["run_dir"] and list(Path(run["run_dir"]).glob("*.wandb"))
        for name in ("val/accuracy", "val/loss"):
            assert run["summary"][name] == pytest.approx(alone[key]["summary"][name], abs=1e-4), (key, name)
    assert len({r["run_dir"] for r in runs.values()}) == 4
    # the live view learns of each member's end as it is recorded, before the agent's end events for its group
    events = [json.loads(line.split(EVENT_PREFIX, 1)[1]) for line in fused.stdout.splitlines() if EVENT_PREFIX in line]
    kinds = [(e["event"], e["run"]) for e in events if e["event"] in ("left", "end")]
    for run in together:
        assert kinds.index(("left", run["id"])) < min(kinds.index(("end", r["id"])) for r in together)
    assert sum(kind == "left" for kind, _ in kinds) == 3  # the group's two and the run that trained alone beside it
    assert all(fused.stderr.count(f"run {run['id']} finished val/accuracy=") == 1 for run in runs.values())


def test_the_agent_warms_fused_steps_up_only_where_no_gpu_may_be_visible(nvidia_smi: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up's backward would initialise CUDA in the agent, where a GPU may be visible (torch built with CUDA,
    a driver: here an nvidia-smi on PATH), and then CUDA fails in every group it forks."""
    import torch

    from ignite_sweep.training import fused

    if not torch.backends.cuda.is_built():
        pytest.skip("torch without CUDA never sees a GPU")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert fused.gpu_may_be_visible() and fused.warm_up() is False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU for this process, whatever the machine has
    assert not fused.gpu_may_be_visible() and fused.warm_up() is True


def test_a_loadable_cuda_driver_library_alone_means_a_gpu_may_be_visible(tmp_path: Path) -> None:
    """Where neither NVIDIA's device node nor nvidia-smi is found (WSL2, Jetson), the CUDA driver library that loads
    is what says a GPU may be visible: a shared library named libcuda.so.1 on LD_LIBRARY_PATH (dlopen reads it at
    process start: asked in a child process)."""
    import _ctypes
    import shutil
    import subprocess
    import sys

    import torch

    if not torch.backends.cuda.is_built() or Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi"):
        pytest.skip("needs torch built with CUDA, on a machine without NVIDIA's driver")
    ask = [sys.executable, "-c", "from ignite_sweep.training.fused import gpu_may_be_visible as g; print(g())"]
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    without = subprocess.run(ask, capture_output=True, text=True, env=env)
    shutil.copy(_ctypes.__file__, tmp_path / "libcuda.so.1")  # any shared object loads
    found = subprocess.run(ask, capture_output=True, text=True, env={**env, "LD_LIBRARY_PATH": str(tmp_path)})
    assert (without.stdout.strip(), found.stdout.strip()) == ("False", "True"), (without.stderr, found.stderr)


@pytest.mark.skipif(not cuda_available(), reason="the agent must leave CUDA to its forked groups: CUDA only")
def test_on_cuda_the_agent_forks_groups_that_train_fused(tmp_path: Path) -> None:
    """The agent warms torch up before it forks its groups, and must not initialise CUDA doing so: a forked child
    then cannot (every group failed on an H200, first as fork_rng saved the CUDA RNG's state, then as autograd's
    first backward counted the CUDA devices)."""
    sweep_id = create(sweep_file(tmp_path, parameters={"lr": {"values": [0.01, 0.02]}, "device": {"value": "cuda"}}))
    result = cli("agent", sweep_id, "--fuse", "2")
    assert result.returncode == 0, result.stderr
    runs = store_runs(sweep_id)
    assert [r["state"] for r in runs] == ["finished"] * 2 and all(r["summary"]["fused"] == 2 for r in runs), runs


def test_ctrl_c_interrupts_every_member_of_a_group_and_none_stays_running(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, parameters={"lr": {"values": [0.01, 0.02]}, "epochs": {"value": 200}})
    sweep_id = create(path)
    agent = start_agent(sweep_id, "--fuse", "2")
    wait_for(lambda: [r for r in store_runs(sweep_id) if r["history"]] and len(
        [r for r in store_runs(sweep_id) if r["history"]]) == 2, what="both members evaluated")  # fmt: skip
    agent.send_signal(signal.SIGINT)
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 130, err
    runs = store_runs(sweep_id)
    assert [r["state"] for r in runs] == ["interrupted", "interrupted"], err
    assert all(r["summary"].get("fused") == 2 and r["summary"]["epochs_completed"] >= 1 for r in runs)


def test_a_fused_group_on_torchs_default_threads_does_not_hang(tmp_path: Path) -> None:
    """As users run it (no thread variables): the agent warms the fused step before it forks, on one thread, so its
    children never enter an OpenMP pool started in the agent (they hung there)."""
    sweep_id = create(sweep_file(tmp_path, parameters={"lr": {"values": [0.01, 0.02]}}))
    env = {k: v for k, v in os.environ.items() if k not in ("IGNITE_SWEEP_THREADS", "OMP_NUM_THREADS")}
    result = cli("agent", sweep_id, "--fuse", "2", env=env, timeout=120)  # 10 s; hung for good before
    assert result.returncode == 0, result.stderr
    assert [(r["state"], r["summary"].get("fused")) for r in store_runs(sweep_id)] == [("finished", 2)] * 2


def test_kill_9_of_a_group_crashes_every_member_and_their_retries_resume_alone(tmp_path: Path) -> None:
    sweep_id = create(sweep_file(tmp_path, parameters={"lr": {"values": [0.01, 0.02]}, "epochs": {"value": 3}}))
    agent = start_agent(sweep_id, "--fuse", "2", "--max-consecutive-failures", "2")  # one death: one failure
    first = wait_for(lambda: next((r for r in store_runs(sweep_id) if r["history"] and r["pid"]), None),
                     what="a member that evaluated")  # fmt: skip
    os.kill(first["pid"], signal.SIGKILL)
    _, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err
    runs = store_runs(sweep_id)
    crashed = [r for r in runs if r["state"] == "crashed"]
    assert len(crashed) == 2 and all(r["error"] == "process killed by SIGKILL" for r in crashed), err
    retries = [r for r in runs if r["retry_of"]]
    assert sorted(r["retry_of"] for r in retries) == sorted(r["id"] for r in crashed)
    assert all(r["state"] == "finished" and r["resumed_epoch"] >= 1 and r["summary"]["epochs_completed"] == 3
               for r in retries), err  # fmt: skip
    assert err.count("trains alone: it resumes its predecessor's checkpoint (a retry trains alone)") == 2
    assert all(err.count(f"run {r['id']} crashed: process killed by SIGKILL") == 1 for r in crashed)
    assert all(err.count(f"run {r['id']} finished") == 1 for r in retries)


def test_groups_that_run_out_of_device_memory_train_alone_and_the_agent_claims_smaller_ones(tmp_path: Path) -> None:
    """tests/test_fused.py's model runs out of device memory in any fused group, as K members too many for a GPU
    would: every run still finishes (alone), and the agent halves K after each such group."""
    grid = {"model": {"value": "test_fused:too_big_when_fused"}, "lr": {"values": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]}}
    sweep_id = create(sweep_file(tmp_path, parameters=grid))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = cli("agent", sweep_id, "--fuse", "4", env=env)
    assert result.returncode == 0, result.stderr
    runs = store_runs(sweep_id)
    assert [r["state"] for r in runs] == ["finished"] * 6
    assert sorted(r["summary"].get("fused_out_of_memory") for r in runs) == [2, 2, 4, 4, 4, 4]
    assert result.stderr.count("trains alone: its group of 4 ran out of device memory (CUDA out of memory") == 4
    assert "--fuse: a group of 4 ran out of device memory; groups of at most 2 from now on" in result.stderr
    assert "--fuse: a group of 2 ran out of device memory; groups of at most 1 from now on" in result.stderr


def test_groups_out_of_memory_after_they_logged_are_run_again_in_smaller_groups(tmp_path: Path) -> None:
    """tests/test_fused.py's model runs out of device memory at any fused group's first evaluation, after its
    members logged: they end interrupted, never failed, and the agent runs them again first in groups of half the
    size, until they train alone and finish."""
    grid = {"model": {"value": "test_fused:eval_out_of_memory"}, "lr": {"values": [0.01, 0.02, 0.03, 0.04]},
            "epochs": {"value": 1}}  # fmt: skip
    sweep_id = create(sweep_file(tmp_path, parameters=grid))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = cli("agent", sweep_id, "--fuse", "4", "--max-consecutive-failures", "1", env=env)
    assert result.returncode == 0, result.stderr
    runs = store_runs(sweep_id)
    assert sorted(r["state"] for r in runs) == ["finished"] * 4 + ["interrupted"] * 6  # 4; 2 (then K is 1); alone
    finished = [r for r in runs if r["state"] == "finished"]
    assert sorted(r["config"]["lr"] for r in finished) == [0.01, 0.02, 0.03, 0.04]
    assert all(r["retry_of"] and "fused" not in r["summary"] for r in finished)
    interrupted = [r for r in runs if r["state"] == "interrupted"]
    assert all(r["error"].startswith("interrupted (its fused group ran out of device memory: CUDA out of memory")
               for r in interrupted), [r["error"] for r in interrupted]  # fmt: skip
    assert "--fuse: a group of 4 ran out of device memory; groups of at most 2 from now on" in result.stderr
    assert "--fuse: a group of 2 ran out of device memory; groups of at most 1 from now on" in result.stderr

