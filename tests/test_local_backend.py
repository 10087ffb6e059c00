"""The local backend with real agent processes, a real SQLite file and real training on digits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import offline_runs
from sweep_helpers import FAST, cli, create, start_agent, store_runs, sweep_file, wait_for, wait_for_evaluating_run

from ignite_sweep.backends.local import LocalBackend
from ignite_sweep.engine import next_params, runs_to_stop
from ignite_sweep.store.sql import LocalStore
from ignite_sweep.sweepfile import validate_sweep
from ignite_sweep.wandb_file import run_file, summary


def test_two_agents_share_a_grid_each_point_once(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"lr": {"values": [0.01, 0.02, 0.03]},
                                                 "batch_size": {"values": [64, 128]}})  # fmt: skip
    sweep_id = create(path)
    agents = [start_agent(sweep_id) for _ in range(2)]
    outputs = [a.communicate(timeout=300) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs
    runs = store_runs(sweep_id)
    points = Counter((r["config"]["lr"], r["config"]["batch_size"]) for r in runs)
    assert len(runs) == 6 and set(points.values()) == {1} and len(points) == 6
    assert all(r["state"] == "finished" and r["summary"]["val/accuracy"] > 0 for r in runs)
    assert all(r["pid"] for r in runs) and len({r["pid"] for r in runs}) == 6  # one child process per run
    run_dirs = offline_runs(offline_wandb)
    assert len(run_dirs) == 6
    for run_dir in run_dirs:  # W&B's requirements.txt is still saved though the agent lists packages once
        assert "torch==" in (run_dir / "files" / "requirements.txt").read_text()


def test_two_agents_never_pass_run_cap(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, method="random", run_cap=5,
                      parameters={"lr": {"distribution": "log_uniform_values", "min": 0.005, "max": 0.05}})  # fmt: skip
    sweep_id = create(path)
    agents = [start_agent(sweep_id) for _ in range(2)]
    for agent in agents:
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err
        assert "run_cap 5 reached" in err
    # The agents exit without interpreter teardown, yet closed the store: the WAL is folded into sweeps.db.
    assert not (offline_wandb / ".ignite-sweep" / "sweeps.db-wal").exists()
    runs = store_runs(sweep_id)
    assert len(runs) == 5 and {r["state"] for r in runs} == {"finished"}
    assert len({r["config"]["lr"] for r in runs}) == 5


def _rows(points: list[tuple[float, float]]) -> list[dict]:
    return [
        {"id": f"r{i}", "state": "finished", "config": {"lr": x}, "summary": {"val/accuracy": y},
         "history": [{"val/accuracy": y}], "search_info": None}
        for i, (x, y) in enumerate(points)
    ]  # fmt: skip


def test_bayes_suggestions_follow_earlier_results() -> None:
    config = validate_sweep({
        "method": "bayes", "metric": {"name": "val/accuracy", "goal": "maximize"},
        "parameters": {"lr": {"distribution": "uniform", "min": 0.0001, "max": 1.0}},
    })  # fmt: skip
    xs = [0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9]
    rising = _rows([(x, x) for x in xs])  # higher lr was better
    falling = _rows([(x, 1 - x) for x in xs])  # lower lr was better
    up = [next_params(config, rising)[0]["lr"] for _ in range(3)]
    down = [next_params(config, falling)[0]["lr"] for _ in range(3)]
    assert min(up) > 0.6 and max(down) < 0.4, (up, down)


def test_hyperband_stops_a_poor_run_early(offline_wandb: Path) -> None:
    path = sweep_file(
        offline_wandb,
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2},
        parameters={"epochs": {"value": 3}, "lr": {"values": [0.05, 0.04, 1e-7]}},
    )
    sweep_id = create(path)
    result = cli("agent", sweep_id)
    assert result.returncode == 0, result.stderr
    runs = store_runs(sweep_id)
    assert [r["state"] for r in runs] == ["finished", "finished", "stopped"]
    stopped = runs[2]
    assert stopped["summary"]["epochs_completed"] == 1 and len(stopped["history"]) == 1
    assert runs[0]["summary"]["epochs_completed"] == 3
    (run_dir,) = [d for d in offline_runs(offline_wandb) if d.name.endswith(stopped["id"])]
    final = summary(run_file(run_dir))  # run_file waits for the exit record: the W&B run was finished
    assert final["status"] == "stopped" and final["epochs_completed"] == 1


def test_kill_9_of_a_trial_marks_it_crashed_and_runs_its_config_again(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"epochs": {"value": 3}, "lr": {"values": [0.01, 0.02]}})
    sweep_id = create(path)
    agent = start_agent(sweep_id)
    first = wait_for_evaluating_run(sweep_id)
    os.kill(first["pid"], signal.SIGKILL)
    _, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err
    runs = store_runs(sweep_id)
    crashed = [r for r in runs if r["state"] == "crashed"]
    assert len(crashed) == 1 and crashed[0]["id"] == first["id"]
    assert crashed[0]["error"] == "process killed by SIGKILL"
    retry = next(r for r in runs if r["retry_of"] == first["id"])
    assert retry["config"] == first["config"] and retry["state"] == "finished" and retry["attempt"] == 1
    assert sorted(r["config"]["lr"] for r in runs if r["state"] == "finished") == [0.01, 0.02]


def test_a_failing_run_is_recorded_and_the_next_ones_go_on(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"model": {"values": ["no_such_module:build", "net"]}})
    sweep_id = create(path)
    result = cli("agent", sweep_id)
    assert result.returncode == 0, result.stderr
    states = {r["config"]["model"]: (r["state"], r["error"]) for r in store_runs(sweep_id)}
    assert states["net"] == ("finished", None)
    assert states["no_such_module:build"][0] == "failed"
    assert "cannot import module 'no_such_module'" in states["no_such_module:build"][1]
    status = json.loads(cli("status", sweep_id, "--json").stdout)
    failed = next(r for r in status["runs"] if r["state"] == "failed")
    assert "no_such_module" in failed["error"]
    table = cli("status", sweep_id).stdout
    assert "failed" in table and "cannot import module" in table.replace("\n", " ").replace("│", "")


def test_max_consecutive_failures_stops_the_agent(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"model": {"values": ["nope_a:x", "nope_b:x", "nope_c:x"]}})
    sweep_id = create(path)
    result = cli("agent", sweep_id, "--max-consecutive-failures", "2")
    assert result.returncode == 1
    assert "2 runs in a row failed" in result.stderr.strip().splitlines()[-1]
    assert len(store_runs(sweep_id)) == 2


@pytest.mark.parametrize(
    ("command", "epochs", "reason", "state"),
    [("stop", 3, "stopped by user", "finished"),  # wandb sweep --stop: the running run finishes
     ("cancel", 30, "canceled by user", "stopped")],  # --cancel: it stops now, gracefully
)  # fmt: skip
def test_stop_and_cancel_then_a_later_agent_runs_nothing(offline_wandb: Path, command: str, epochs: int,
                                                         reason: str, state: str) -> None:  # fmt: skip
    path = sweep_file(offline_wandb, parameters={"epochs": {"value": epochs}, "lr": {"values": [0.01, 0.02]}})
    sweep_id = create(path)
    agent = start_agent(sweep_id)
    wait_for(lambda: any(r["history"] for r in store_runs(sweep_id)), what="a first evaluation")
    result = cli(command, sweep_id)
    assert result.returncode == 0, result.stderr
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 0 and reason in err, err
    (run,) = store_runs(sweep_id)
    assert run["state"] == state and (run["summary"]["epochs_completed"] == 3 if command == "stop"
                                      else run["summary"]["epochs_completed"] < epochs)  # fmt: skip
    assert cli("resume", sweep_id).returncode == 1  # only a paused sweep resumes: one line
    again = cli("agent", sweep_id)
    assert again.returncode == 0 and "agent done: 0 runs" in again.stderr, again.stderr
    assert len(store_runs(sweep_id)) == 1


def test_pause_makes_agents_wait_until_resume(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"lr": {"values": [0.01]}})
    sweep_id = create(path)
    assert cli("pause", sweep_id).returncode == 0
    agent = start_agent(sweep_id)
    assert agent.stderr is not None
    assert "sweep is paused: waiting" in agent.stderr.readline()
    time.sleep(1)
    assert agent.poll() is None and store_runs(sweep_id) == []  # waiting, as W&B's agent waits
    result = cli("resume", sweep_id)
    assert result.returncode == 0, result.stderr
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 0 and "every grid point has run" in err, err
    assert [r["state"] for r in store_runs(sweep_id)] == ["finished"]
    assert json.loads(cli("status", sweep_id, "--json").stdout)["sweep"]["state"] == "finished"


def test_ctrl_c_then_a_new_agent_runs_every_grid_point_to_the_end_once(offline_wandb: Path) -> None:
    """Ctrl-C is not the end of a run's work: the run it cut short is `interrupted` (no result), and the next
    agent runs it again before anything new; the grid ends with every point finished exactly once."""
    path = sweep_file(offline_wandb, parameters={"epochs": {"value": 4}, "lr": {"values": [0.01, 0.02, 0.03]}})
    sweep_id = create(path)
    agent = start_agent(sweep_id)
    (running,) = wait_for(lambda: [r for r in store_runs(sweep_id) if r["history"]], what="a first evaluation")
    agent.send_signal(signal.SIGINT)
    while agent.poll() is None:  # more stops while the run ends (a terminal's Ctrl-C reaches it too): no harm
        with contextlib.suppress(ProcessLookupError):
            os.kill(running["pid"], signal.SIGTERM)
        time.sleep(0.002)
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 130, err
    (cut,) = store_runs(sweep_id)
    assert cut["state"] == "interrupted" and cut["summary"]["status"] == "interrupted", cut
    assert 1 <= cut["summary"]["epochs_completed"] < 4 and cut["error"].startswith("interrupted (SIGTERM) after")
    assert cli("best", sweep_id).returncode == 1  # an interrupted run is no result, however good its metric

    agent = start_agent(sweep_id)
    _, err = agent.communicate(timeout=300)
    assert agent.returncode == 0 and "every grid point has run" in err, err
    assert f"(continues {cut['id']})" in err.splitlines()[0]  # the interrupted run first, before new points
    runs = store_runs(sweep_id)
    finished = [r for r in runs if r["state"] == "finished"]
    assert sorted(r["config"]["lr"] for r in finished) == [0.01, 0.02, 0.03]
    assert [r["state"] for r in runs].count("interrupted") == 1
    rerun = next(r for r in runs if r["retry_of"] == cut["id"])
    assert rerun["config"] == cut["config"] and rerun["state"] == "finished" and rerun["attempt"] == cut["attempt"]
    status = json.loads(cli("status", sweep_id, "--json").stdout)
    assert status["sweep"]["best_run"] in {r["id"] for r in finished}
    assert next(r for r in status["runs"] if r["id"] == rerun["id"])["continues"] == cut["id"]
    table = cli("status", sweep_id).stdout
    assert "interrupted" in table and f"continues {cut['id']}" in table


def test_interrupted_runs_are_claimed_first_and_are_no_result(offline_wandb: Path) -> None:
    backend = LocalBackend(LocalStore(offline_wandb / "i.db"))
    config = validate_sweep({"method": "grid", "run_cap": 2, "metric": {"name": "val/accuracy", "goal": "maximize",
                             "target": 0.9}, "parameters": {"lr": {"values": [0.1, 0.2, 0.3]}, **FAST}})  # fmt: skip
    sweep_id = backend.create(config)
    first, _ = backend.claim(sweep_id)
    backend.store.end_run(first["id"], "interrupted", {"val/accuracy": 0.99, "epochs_completed": 0})
    assert backend.best_run(sweep_id) is None  # 0.99 would have been the best and reached the target
    again, _ = backend.claim(sweep_id)
    assert again["retry_of"] == first["id"] and again["config"] == first["config"] and again["attempt"] == 0
    backend.store.end_run(again["id"], "interrupted", {"val/accuracy": 0.5})
    third, _ = backend.claim(sweep_id)  # interrupted again: run again again, not counted against run_cap
    assert third["retry_of"] == again["id"] and third["config"] == first["config"]
    backend.store.end_run(third["id"], "finished", {"val/accuracy": 0.5})
    fresh, _ = backend.claim(sweep_id)  # the engine's next grid point: the interrupted ones' point is done once
    assert fresh.get("retry_of") is None and fresh["config"]["lr"] != first["config"]["lr"]
    backend.store.end_run(fresh["id"], "finished", {"val/accuracy": 0.6})
    assert backend.claim(sweep_id) == (None, "run_cap 2 reached")
    assert backend.best_run(sweep_id).id == fresh["id"]


def test_stale_heartbeat_is_reaped_and_retried(offline_wandb: Path) -> None:
    store = LocalStore(offline_wandb / "hb.db")
    backend = LocalBackend(store)
    backend.heartbeat_timeout_s = 5
    config = validate_sweep({"method": "grid", "parameters": {"lr": {"values": [0.1, 0.2]}, **FAST}})
    sweep_id = backend.create(config)
    first, _ = backend.claim(sweep_id)
    store._write("UPDATE runs SET heartbeat_at = :t WHERE id = :id", t=time.time() - 60, id=first["id"])
    retry, _ = backend.claim(sweep_id)  # its agent died with it: no heartbeat for 60 s
    crashed = store.run(first["id"])
    assert crashed["state"] == "crashed" and "no heartbeat" in crashed["error"]
    assert retry["retry_of"] == first["id"] and retry["config"] == first["config"]
    second, _ = backend.claim(sweep_id)
    assert second["config"]["lr"] != first["config"]["lr"] and second.get("retry_of") is None


def test_retries_are_bounded(offline_wandb: Path) -> None:
    backend = LocalBackend(LocalStore(offline_wandb / "r.db"))
    config = validate_sweep({"method": "grid", "parameters": {"lr": {"values": [0.1]}, **FAST}})
    sweep_id = backend.create(config)
    claimed = []
    while True:
        run, reason = backend.claim(sweep_id)
        if run is None:
            break
        claimed.append(run)
        backend.store.end_run(run["id"], "crashed", error="test")
    assert len(claimed) == 3 and reason == "every grid point has run"  # the first try and 2 retries


def test_metric_target_finishes_the_sweep(offline_wandb: Path) -> None:
    backend = LocalBackend(LocalStore(offline_wandb / "t.db"))
    config = validate_sweep({"method": "random", "metric": {"name": "val/accuracy", "goal": "maximize",
                             "target": 0.9}, "parameters": {"lr": {"min": 0.01, "max": 0.1}, **FAST}})  # fmt: skip
    sweep_id = backend.create(config)
    run, _ = backend.claim(sweep_id)
    backend.store.end_run(run["id"], "finished", {"val/accuracy": 0.95})
    assert backend.claim(sweep_id) == (None, "metric target 0.9 reached")
    assert backend.sweep(sweep_id).state == "finished"


def test_hyperband_decision_is_the_engines() -> None:
    config = validate_sweep({
        "method": "grid", "metric": {"name": "val/accuracy", "goal": "maximize"},
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
        "parameters": {"lr": {"values": [0.1, 0.2, 0.3]}},
    })  # fmt: skip
    rows = _rows([(0.1, 0.9), (0.2, 0.9)]) + [
        {
            "id": "bad",
            "state": "running",
            "config": {"lr": 0.3},
            "summary": {},
            "history": [{"val/accuracy": 0.1}],
        }
    ]
    assert runs_to_stop(config, rows) == ["bad"]
    assert runs_to_stop({k: v for k, v in config.items() if k != "early_terminate"}, rows) == []


@pytest.mark.parametrize("sweep_id", ["local/zzzzzzzz", "nonsense"])
def test_unknown_sweep_is_one_line(sweep_id: str) -> None:
    result = cli("status", sweep_id)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_agent_next_to_another_on_this_machine_says_how_to_share_the_cores(
    offline_wandb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Separate agents on one machine each take every core for their runs (torch's default) and slow each other
    down: an agent that finds another one running says how to share the cores (one line); a killed agent's
    registration goes with it."""
    import subprocess
    import sys

    from ignite_sweep.execution.process import THREAD_VARIABLES, agents_on_this_machine

    folder = tmp_path / "agents"
    monkeypatch.setenv("IGNITE_SWEEP_AGENTS_DIR", str(folder))
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom ignite_sweep.execution.process import "
                               "agents_on_this_machine\nn, f = agents_on_this_machine()\nprint(n, flush=True)\n"
                               "time.sleep(300)"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        sweep_id = create(sweep_file(offline_wandb, parameters={"lr": {"values": [0.05]}}))
        alone = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}  # torch's default threads
        result = cli("agent", sweep_id, env=alone)
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "other ignite-sweep agent" in line]
        if len(os.sched_getaffinity(0)) >= 2:
            (warning,) = warnings
            assert warning.startswith("warning: 1 other ignite-sweep agent on this machine")
            assert "--workers 2" in warning and "OMP_NUM_THREADS=" in warning
        result = cli("agent", sweep_id)  # a thread count of its own (OMP_NUM_THREADS=1 here): nothing to say
        assert result.returncode == 0 and "other ignite-sweep agent" not in result.stderr, result.stderr
    finally:
        holder.kill()
        holder.wait()
    others, own = agents_on_this_machine()  # the killed holder and the finished agents are gone
    assert others == 0 and [p.name for p in folder.iterdir()] == [str(os.getpid())]
    own.close()
