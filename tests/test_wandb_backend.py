"""The W&B backend through the real wandb SDK (wandb.sweep, wandb.agent, wandb.Api, _set_sweep_state) talking
to the local W&B API stand-in (tests/wandb_server.py). Nothing inside wandb is mocked; runs train for real on
digits and are logged offline, and the stand-in reads them back from their .wandb files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import offline_runs
from sweep_helpers import cli, start_agent, sweep_file, wait_for

from ignite_sweep.backends import backend_for_sweep, choose_backend
from ignite_sweep.backends.wandb import WandbBackend
from ignite_sweep.sweepfile import SWEEP_COMMAND, validate_sweep
from ignite_sweep.wandb_file import history, records, rewrite_run, run_file, summary

FAST = {"dataset": {"value": "digits"}, "epochs": {"value": 1}, "log_interval": {"value": 50}}
CONFIG = {"method": "grid", "metric": {"name": "val/accuracy", "goal": "maximize"},
          "parameters": {**FAST, "lr": {"values": [0.02, 0.05]}}}  # fmt: skip


def test_create_registers_the_sweep_through_the_sdk(wandb_standin: Any) -> None:
    sweep_id = WandbBackend().create(validate_sweep(CONFIG), project="digits")
    assert sweep_id == "me/digits/sw00001"
    registered = wandb_standin.sweeps["sw00001"]
    assert (registered.entity, registered.project) == ("me", "digits")
    assert registered.config["command"] == SWEEP_COMMAND and registered.config["parameters"] == CONFIG["parameters"]
    assert "UpsertSweep" in wandb_standin.log


def test_create_shows_the_servers_validation_warnings_one_line_each(wandb_standin: Any, tmp_path: Path) -> None:
    wandb_standin.extra_config_warnings = ["Additional properties are not allowed ('colour' was unexpected)\nat []"]
    result = cli("create", str(sweep_file(tmp_path, parameters={"lr": {"values": [0.02, 0.05]}})), "--backend", "wandb",
                 "--project", "digits")
    assert result.returncode == 0, result.stderr
    assert "warning: W&B: Additional properties are not allowed ('colour' was unexpected)" in result.stderr
    assert "Malformed sweep config" not in result.stderr + result.stdout  # not wandb's multi-line box
    assert result.stdout.splitlines()[-1] == "me/digits/sw00001" and "sw00001" in wandb_standin.sweeps


def test_agent_runs_what_the_controller_hands_out_and_reads_back_in_creation_order(
    wandb_standin: Any, offline_wandb: Path
) -> None:
    backend = WandbBackend()
    sweep_id = backend.create(validate_sweep({**CONFIG, "parameters": {**FAST, "lr": {"values": [0.05, 0.02, 0.1]}}}),
                              project="digits")  # fmt: skip
    assert backend.run_agent(sweep_id, count=2).runs == 2
    assert backend.run_agent(sweep_id).runs == 1  # the rest of the grid, then the controller says exit
    handed_out = [r.name for r in sorted(wandb_standin.runs.values(), key=lambda r: r.created)]
    runs = backend.runs(sweep_id)
    assert [r.id for r in runs] == handed_out  # oldest first, as the API lists them since wandb PR #10130
    assert [r.config["lr"] for r in runs] == [0.05, 0.02, 0.1]  # grid order: the configs came from heartbeats
    assert all(r.state == "finished" and (r.metric("val/accuracy") or 0) > 0.5 for r in runs)
    for run in runs:  # each run was logged offline under the id the controller gave it
        (run_dir,) = [d for d in offline_runs(offline_wandb) if d.name.endswith(run.id)]
        rows = history(run_file(run_dir))
        assert {"train/loss", "train/lr", "val/accuracy"} <= set().union(*rows)
    best = backend.best_run(sweep_id)
    assert best is not None and best.id == max(runs, key=lambda r: r.metric("val/accuracy") or 0).id
    assert backend.sweep(sweep_id).state == "finished"  # the grid is exhausted
    assert {"CreateAgent", "Heartbeat", "GetSweep", "Runs"} <= set(wandb_standin.log)


def test_hyperband_stop_command_ends_a_poor_run_gracefully(wandb_standin: Any, offline_wandb: Path) -> None:
    config = {**CONFIG, "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
              "parameters": {**FAST, "epochs": {"value": 4}, "lr": {"values": [0.05, 0.04, 1e-7]}}}  # fmt: skip
    backend = WandbBackend()
    sweep_id = backend.create(validate_sweep(config), project="digits")
    backend.run_agent(sweep_id)
    runs = backend.runs(sweep_id)
    assert [r.state for r in runs] == ["finished", "finished", "stopped"], [(r.state, r.summary) for r in runs]
    poor = runs[2]
    assert poor.summary["status"] == "stopped" and poor.summary["epochs_completed"] < 4
    (run_dir,) = [d for d in offline_runs(offline_wandb) if d.name.endswith(poor.id)]
    (exit_record,) = [r for r in records(run_file(run_dir)) if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit.exit_code == 0  # finished gracefully (engine.terminate()), not killed
    final = summary(run_file(run_dir))  # its final metrics were logged before the run finished
    assert final["status"] == "stopped" and final["best/val/accuracy"] > 0


def test_report_reads_histories_through_the_api(wandb_standin: Any, tmp_path: Path) -> None:
    from ignite_sweep.report.html import collect, write_html

    backend = WandbBackend()
    config = {**CONFIG, "parameters": {**FAST, "epochs": {"value": 2}, "lr": {"values": [0.05, 0.02]}}}
    sweep_id = backend.create(validate_sweep(config), project="digits")
    backend.run_agent(sweep_id)
    data = collect(backend.sweep(sweep_id), backend.runs_with_history(sweep_id))
    assert {r.id: [row["epoch"] for row in r.history] for r in data.runs} == {r.id: [1, 2] for r in data.runs}
    text = write_html(data, tmp_path / "report.html").read_text()
    assert f"{data.best_first()[0].id} (best)" in text


def test_cli_status_and_best_through_the_api(wandb_standin: Any, offline_wandb: Path) -> None:
    backend = WandbBackend()
    sweep_id = backend.create(validate_sweep(CONFIG), project="digits")
    backend.run_agent(sweep_id, count=1)
    status = cli("status", sweep_id, "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert [(r["config"]["lr"], r["state"]) for r in body["runs"]] == [(0.02, "finished")]
    assert body["sweep"]["state"] == "running" and body["sweep"]["best_run"] == body["runs"][0]["id"]
    assert yaml.safe_load(cli("best", sweep_id).stdout)["lr"] == 0.02
    assert cli("stop", sweep_id).returncode == 0 and wandb_standin.sweeps["sw00001"].state == "FINISHED"
    _one_line_error(cli("stop", sweep_id), "Sweep already finished")


def test_pause_resume_and_cancel_with_w_and_b_semantics(wandb_standin: Any, offline_wandb: Path) -> None:
    """--pause: the agent waits, no run is handed out; --resume: runs again; --cancel: the running run is
    stopped now (the controller's stop command), gracefully, and the agent exits."""
    backend = WandbBackend()
    config = {**CONFIG, "parameters": {**FAST, "epochs": {"value": 30}, "lr": {"values": [0.05, 0.02]}}}
    sweep_id = backend.create(validate_sweep(config), project="digits")
    backend.pause(sweep_id)
    assert backend.sweep(sweep_id).state == "paused"
    agent = start_agent(sweep_id)
    wait_for(lambda: wandb_standin.log.count("Heartbeat") >= 3, what="the agent heartbeating")
    assert wandb_standin.runs == {}  # paused: nothing handed out
    backend.resume(sweep_id)

    def training() -> Any:
        with wandb_standin.lock:
            wandb_standin.refresh_offline_runs()
            return next((r for r in wandb_standin.runs.values() if r.history), None)

    wait_for(training, what="a run that has logged")
    backend.cancel(sweep_id)
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 0 and "Traceback" not in err, err  # W&B's stop of a run is no error to print
    (run,) = backend.runs(sweep_id)
    assert run.state == "stopped" and run.summary["epochs_completed"] < 30, run.summary
    assert backend.sweep(sweep_id).state == "canceled"


def test_workers_2_against_w_and_b_each_run_once_no_traceback(wandb_standin: Any) -> None:
    backend = WandbBackend()
    sweep_id = backend.create(validate_sweep({**CONFIG, "parameters": {**FAST, "lr": {"values": [0.02, 0.05, 0.1]}}}),
                              project="digits")  # fmt: skip
    result = cli("agent", sweep_id, "--workers", "2", "--stagger", "0")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert "pool done: 2 slots, 3 finished" in result.stdout
    runs = backend.runs(sweep_id)
    assert sorted(r.config["lr"] for r in runs) == [0.02, 0.05, 0.1] and {r.state for r in runs} == {"finished"}
    slots = {line.split("]")[0] for line in result.stdout.splitlines() if " started:" in line}
    assert slots == {"[cpu0", "[cpu1"}, result.stdout


def test_online_runs_stream_history_and_summary_to_the_server(wandb_standin: Any) -> None:
    """Runs logged online: history and summary reach the server over file_stream (UpsertBucket, CreateRunFiles,
    the model artifact), from the forked child that trains each run."""
    backend = WandbBackend()
    sweep_id = backend.create(validate_sweep(CONFIG), project="digits")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}  # online
    result = subprocess.run([sys.executable, "-m", "ignite_sweep", "agent", sweep_id, "--count", "1"],
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    (run,) = wandb_standin.runs.values()
    assert run.online and run.state == "finished" and run.exitcode == 0
    keys = set().union(*run.history)
    assert {"train/loss", "train/lr", "train/grad_norm", "val/accuracy", "val/loss", "epoch"} <= keys
    assert run.summary["status"] == "finished" and run.summary["val/accuracy"] > 0.5
    assert {"UpsertBucket", "file_stream", "CreateRunFiles", "CreateArtifact"} <= set(wandb_standin.log)
    (record,) = backend.runs(sweep_id)
    assert record.state == "finished" and record.metric("val/accuracy") == run.summary["val/accuracy"]


def test_the_stock_wandb_agent_runs_the_registered_command(wandb_standin: Any) -> None:
    """`wandb agent <entity/project/id>`, W&B's own CLI agent, runs a sweep ignite-sweep created: the registered
    command (python -m ignite_sweep.train ${args}) trains the run it is handed."""
    backend = WandbBackend()
    sweep_id = backend.create(validate_sweep(CONFIG), project="digits")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}  # the venv's python
    result = subprocess.run([sys.executable, "-m", "wandb", "agent", sweep_id, "--count", "1"],
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "python -m ignite_sweep.train --dataset=digits --epochs=1 --log_interval=50 --lr=0.02" in result.stderr
    (run,) = backend.runs(sweep_id)
    assert run.state == "finished" and run.config["lr"] == 0.02 and (run.metric("val/accuracy") or 0) > 0.5


# ---------------------------------------------------------------- clear errors, bounded in time


def _one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert needle in result.stderr, result.stderr


def test_no_login_is_one_line_within_2_seconds(offline_wandb: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    path = sweep_file(offline_wandb)
    started = time.monotonic()
    result = cli("create", str(path), "--backend", "wandb")
    assert time.monotonic() - started < 2.0
    _one_line_error(result, "W&B: no login found for https://api.wandb.ai (WANDB_API_KEY or `wandb login`)")
    for args in (["status", "me/p/abc"], ["best", "me/p/abc"], ["stop", "me/p/abc"], ["agent", "me/p/abc"]):
        _one_line_error(cli(*args), "no login found")


def test_a_refused_key_is_one_line(wandb_standin: Any, offline_wandb: Path) -> None:
    wandb_standin.refuse_keys = True
    _one_line_error(cli("create", str(sweep_file(offline_wandb)), "--backend", "wandb"),
                    f"W&B at {wandb_standin.url} refused the API key (HTTP 401)")  # fmt: skip
    _one_line_error(cli("status", "me/digits/sw00001"), "refused the API key")


def test_an_unreachable_server_is_one_line_in_seconds(offline_wandb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: refused at once
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    _one_line_error(cli("create", str(sweep_file(offline_wandb)), "--backend", "wandb"),
                    f"W&B server http://127.0.0.1:{port} cannot be reached")  # fmt: skip

    silent = socket.socket()  # accepts connections, never answers: the preflight's own timeout
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("IGNITE_SWEEP_WANDB_TIMEOUT_S", "2")
    started = time.monotonic()
    result = cli("status", "me/digits/abc")
    assert time.monotonic() - started < 10
    _one_line_error(result, "cannot be reached (timed out)")
    silent.close()


def test_an_unknown_sweep_is_one_line(wandb_standin: Any) -> None:
    _one_line_error(cli("status", "me/digits/nosuch"), "W&B sweep 'me/digits/nosuch': Could not find sweep")
    _one_line_error(cli("agent", "me/digits/nosuch"), "W&B sweep 'me/digits/nosuch'")
    _one_line_error(cli("agent", "me/digits/nosuch", "--fuse", "2"), "--fuse 2 needs the local backend")


def test_the_server_going_away_mid_agent_is_one_line_and_keeps_the_run(
    wandb_standin: Any, offline_wandb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = WandbBackend()
    config = {**CONFIG, "parameters": {**FAST, "epochs": {"value": 30}, "lr": {"values": [0.05, 0.02]}}}
    sweep_id = backend.create(validate_sweep(config), project="digits")
    monkeypatch.setenv("IGNITE_SWEEP_WANDB_WATCHDOG_S", "1")
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # a hang is reported with every thread's stack (SIGABRT below)
    agent = start_agent(sweep_id)

    def training() -> Any:
        with wandb_standin.lock:
            wandb_standin.refresh_offline_runs()
            return next((r for r in wandb_standin.runs.values() if r.history), None)

    run = wait_for(training, what="a run that has logged")
    wandb_standin.stop()  # the server goes away: connections refused from now on
    started = time.monotonic()
    try:
        _, err = agent.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        agent.send_signal(signal.SIGABRT)
        pytest.fail("the agent hung:\n" + agent.communicate(timeout=30)[1][-6000:])
    assert time.monotonic() - started < 60
    assert agent.returncode == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: W&B server {wandb_standin.url} went away during the agent"), err
    assert "wandb sync" in last
    (run_dir,) = [d for d in offline_runs(offline_wandb) if d.name.endswith(run.name)]
    final = summary(run_file(run_dir))  # the run's data is kept locally, its end recorded
    assert final["status"] == "interrupted" and final["epochs_completed"] < 30


# ---------------------------------------------------------------- backend choice, interrupts


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


def test_ctrl_c_ends_a_wandb_run_interrupted_with_a_nonzero_exit(offline_wandb: Path) -> None:
    """Ctrl-C (not W&B's stop, which is a SIGTERM) during a W&B sweep run: the summary says `interrupted`
    and the run exits non-zero, so W&B's controller sees unfinished work; it decides whether to offer it
    again. The trial runs as `wandb agent` starts it: its own process, params in WANDB_SWEEP_PARAM_PATH."""
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
    # W&B's agent, Ctrl-C'd too, stops the run with SIGTERMs while it ends (the run's end must still be recorded)
    time.sleep(0.2)
    while trial.poll() is None:
        trial.send_signal(signal.SIGTERM)
        time.sleep(0.002)
    out, err = trial.communicate(timeout=120)
    assert trial.returncode == 0, err
    end = json.loads(next(line for line in out.splitlines() if '"event": "end"' in line).split(" ", 1)[1])
    assert end["state"] == "interrupted"
    (run_dir,) = offline_runs(offline_wandb)
    final = summary(run_file(run_dir))
    assert final["status"] == "interrupted" and 1 <= final["epochs_completed"] < 20
    (exit_record,) = [r for r in records(run_file(run_dir)) if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit.exit_code == 1


def test_the_stand_in_fails_a_test_on_an_operation_it_does_not_know(tmp_path: Path) -> None:
    """SDK drift shows up as a failure naming the operation (the fixture asserts `unanswered` is empty)."""
    from wandb_server import WandbStandIn

    server = WandbStandIn(tmp_path).start()
    try:
        status, body = server.handle_post("/graphql", json.dumps(
            {"query": "#graphql\nquery BrandNewThing { viewer { id } }", "variables": {}}).encode())  # fmt: skip
    finally:
        server.stop()
    assert status == 200 and "unknown operation BrandNewThing" in body["errors"][0]["message"]
    assert server.unanswered == ["BrandNewThing"]


def test_a_rewritten_wandb_file_is_what_wandb_wrote_but_its_sweep(offline_wandb: Path) -> None:
    """The .wandb writer against a file wandb itself wrote: the same records give the same bytes (chunks, block
    padding, a run record larger than a block split FIRST/MIDDLE/LAST); a new sweep id changes the run record only;
    a file cut off mid-record (a run still logging) is copied up to its last whole record."""
    import wandb

    run = wandb.init(project="p", config={"note": "x" * 70_000})  # a run record spanning three blocks
    for i in range(3):
        run.log({"loss": 1.0 / (i + 1)})
    run.finish()
    wandb.teardown()  # its service has written the file to the end
    [original] = (offline_wandb / "wandb").glob("offline-run-*/*.wandb")
    data = original.read_bytes()
    assert rewrite_run(original, offline_wandb / "same.wandb", sweep_id="") == len(data)
    assert (offline_wandb / "same.wandb").read_bytes() == data
    moved = offline_wandb / "moved.wandb"
    rewrite_run(original, moved, sweep_id="sw00042")
    before, after = list(records(original)), list(records(moved))
    for record in before:
        if record.WhichOneof("record_type") == "run":
            record.run.sweep_id = "sw00042"
    assert after == before and [r.run.sweep_id for r in after if r.HasField("run")] == ["sw00042"]
    kinds, pos, raw = [], 7, moved.read_bytes()
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # the block's zero padding
            pos += 32768 - pos % 32768
            continue
        kinds.append(raw[pos + 6])
        pos += 7 + int.from_bytes(raw[pos + 4 : pos + 6], "little")
    assert kinds.count(2) == kinds.count(4) >= 1 and kinds.count(3) >= 1 and pos == len(raw)  # FIRST/MIDDLE/LAST
    cut = offline_wandb / "cut.wandb"
    cut.write_bytes(data[: len(data) - 20])
    rewrite_run(cut, offline_wandb / "whole.wandb", sweep_id="")
    whole = (offline_wandb / "whole.wandb").read_bytes()
    assert 0 < len(list(records(offline_wandb / "whole.wandb"))) < len(before) and data.startswith(whole)


def test_sync_uploads_a_local_sweep_grouped_and_tagged(wandb_standin: Any, offline_wandb: Path) -> None:
    """`ignite-sweep sync` registers the local sweep on W&B and runs the real `wandb sync` over its offline runs,
    rewritten to name that sweep: the server receives each run in the sweep with its history and summary, grouped
    under the sweep's name and tagged local-sweep-<id>. A second sync reuses the sweep and uploads nothing again."""
    path = sweep_file(offline_wandb, name="s.yaml", parameters={"lr": {"values": [0.02, 0.05]}})
    path.write_text(path.read_text() + "name: digits-lr\n")
    created = cli("run", str(path), "--backend", "local")
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip().splitlines()[-1]
    local_runs = {r["id"] for r in json.loads(cli("status", sweep_id, "--json").stdout)["runs"]}
    result = cli("sync", sweep_id, "--project", "digits")
    assert result.returncode == 0, result.stderr
    assert "W&B sweep me/digits/sw00001: 2 run folders uploaded, 0 uploaded before" in result.stderr
    [sweep] = wandb_standin.sweeps.values()
    assert sweep.project == "digits" and sweep.config["name"] == "digits-lr"
    assert sweep.config["parameters"]["lr"] == {"values": [0.02, 0.05]} and sweep.state == "FINISHED"
    assert set(wandb_standin.runs) == local_runs
    for run in wandb_standin.runs.values():
        assert run.sweep == sweep.name and run.project == "digits" and run.group == "digits-lr"
        assert f"local-sweep-{sweep_id[6:]}" in run.tags
        assert run.state == "finished" and run.summary["val/accuracy"] > 0.5
        assert any("val/accuracy" in row for row in run.history)
    uploads = wandb_standin.log.count("UpsertBucket")
    again = cli("sync", sweep_id, "--project", "digits")
    assert again.returncode == 0, again.stderr
    assert "nothing new to upload" in again.stderr
    assert list(wandb_standin.sweeps) == [sweep.name] and wandb_standin.log.count("UpsertBucket") == uploads
    assert not list(offline_wandb.glob("wandb/.ignite-sweep-sync-*"))  # the staging folder is gone


GATED = """import argparse, os
import wandb
parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float)
args = parser.parse_args()
if "WANDB_SWEEP_ID" in os.environ:  # as many scripts do: log only as a sweep's run
    run = wandb.init()
    run.log({"score": 2 * args.x})
    run.finish()
"""


def test_sync_puts_a_program_sweeps_runs_in_a_w_and_b_sweep(wandb_standin: Any, offline_wandb: Path) -> None:
    """A program that logs only under WANDB_SWEEP_ID: its runs name the local sweep as their sweep, which W&B does
    not know; after sync they are the runs of the W&B sweep that sync registered, with their metric."""
    (offline_wandb / "gated.py").write_text(GATED)
    path = offline_wandb / "program.yaml"
    path.write_text(yaml.safe_dump({"program": "gated.py", "method": "grid", "parameters": {"x": {"values": [1, 2]}},
                                    "metric": {"name": "score", "goal": "maximize"}}))  # fmt: skip
    created = cli("run", str(path), "--backend", "local", cwd=offline_wandb)
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip().splitlines()[-1]
    [original] = {r.run.sweep_id for p in offline_runs(offline_wandb) for r in records(next(p.glob("*.wandb")))
                  if r.WhichOneof("record_type") == "run"}  # fmt: skip
    assert original == sweep_id[6:]  # as under `wandb agent`
    dry = cli("sync", sweep_id, "--project", "gated", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("offline-run-") == 2, dry.stderr
    assert not wandb_standin.sweeps and "UpsertSweep" not in wandb_standin.log  # a dry run registers nothing
    result = cli("sync", sweep_id, "--project", "gated")
    assert result.returncode == 0, result.stderr
    [sweep] = wandb_standin.sweeps.values()
    assert sweep.project == "gated" and sweep.config["program"] == "gated.py"
    runs = wandb_standin.runs.values()
    assert len(runs) == 2 and all(run.sweep == sweep.name and run.state == "finished" for run in runs)
    assert sorted(run.summary["score"] for run in runs) == [2.0, 4.0]
    assert sorted(row["score"] for run in runs for row in run.history) == [2.0, 4.0]


def test_sync_without_a_w_and_b_sweep_uploads_the_runs_grouped(wandb_standin: Any, offline_wandb: Path) -> None:
    """W&B refusing the sweep (permissions, say) does not stop the upload: one warning, the runs arrive grouped and
    tagged as they were logged, in no sweep. W&B itself answers a run of an unknown sweep with 404: not created."""
    path = sweep_file(offline_wandb, name="s.yaml", parameters={"lr": {"value": 0.05}})
    created = cli("run", str(path), "--backend", "local")
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip().splitlines()[-1]
    [run_dir] = offline_runs(offline_wandb)
    copy = offline_wandb / "unknown" / run_dir.name
    shutil.copytree(run_dir, copy)
    [file] = run_dir.glob("*.wandb")
    rewrite_run(file, copy / file.name, sweep_id="nosuch12")
    plain = subprocess.run([sys.executable, "-m", "wandb", "sync", "-p", "digits", str(copy)], capture_output=True,
                           text=True, env={**os.environ, "WANDB_SILENT": "false"})  # fmt: skip
    assert "sweep nosuch12 not found" in plain.stderr and not wandb_standin.runs  # no run, as on W&B (wandb#8115)
    assert not list(copy.glob("*.synced"))
    wandb_standin.refuse_sweeps = True
    result = cli("sync", sweep_id, "--project", "digits")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning") == 1 and "W&B refused a sweep" in result.stderr
    assert not wandb_standin.sweeps
    [run] = wandb_standin.runs.values()
    assert run.sweep is None and run.group == f"sweep-{sweep_id[6:]}" and f"local-sweep-{sweep_id[6:]}" in run.tags
    assert run.state == "finished" and run.summary["val/accuracy"] > 0.5


def test_the_watchdog_stops_an_agent_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A script's background job (`ignite-sweep agent ... &`, sbatch) starts with SIGINT ignored; the watchdog's
    SIGINT must still stop the agent when the server is gone, even between runs (no run to interrupt)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    code = ("import time\nfrom ignite_sweep.backends.wandb import ServerWatchdog\nwatchdog = ServerWatchdog(0.2)\n"
            "try:\n    with watchdog:\n        time.sleep(60)\nexcept KeyboardInterrupt:\n"
            "    print('stopped', watchdog.gone)\n")  # fmt: skip
    env = {**os.environ, "WANDB_BASE_URL": f"http://127.0.0.1:{port}", "WANDB_API_KEY": "x" * 40}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    assert result.stdout.strip() == "stopped True", result.stderr
    assert time.monotonic() - started < 30
