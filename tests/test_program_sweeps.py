"""Program sweeps on the local backend: the user's own script, run as ``wandb agent`` runs it, offline.

Every program here is a real process started by the real CLI agent; the Ignite one trains for real on digits and
logs with Ignite's WandBLogger (offline), and knows nothing of ignite-sweep."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import cli, create, start_agent, store_runs, wait_for

from ignite_sweep.execution.program import build_command
from ignite_sweep.wandb_file import history, run_file, summary

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own-script"


def program_sweep(folder: Path, body: dict[str, Any], name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Agents run programs from the folder they start in, as wandb agent does: the test's folder."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE / "train.py", tmp_path / "ignite_digits.py")
    return tmp_path


IGNITE_SWEEP = {"program": "ignite_digits.py", "method": "bayes",
                "metric": {"name": "validation/accuracy", "goal": "maximize"},
                "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2}}  # fmt: skip


def test_an_ignite_script_with_wandb_logger_feeds_the_sweep_while_it_trains(in_tmp: Path) -> None:
    body = {**IGNITE_SWEEP, "parameters": {"lr": {"values": [0.5, 0.3]}, "hidden": {"values": [16, 32]},
                                           "epochs": {"value": 3}, "sleep": {"value": 1.0}}}  # fmt: skip
    sweep_id = create(program_sweep(in_tmp, body))
    agent = start_agent(sweep_id, "--count", "2")
    # live: the first evaluation is in the store while the program still trains (it sleeps 1 s per epoch)
    live = wait_for(lambda: next((r for r in store_runs(sweep_id) if r["state"] == "running" and r["history"]), None),
                    what="a running program's first evaluation in the store")  # fmt: skip
    assert "validation/accuracy" in live["history"][0] and live["history"][0]["_step"] == 22  # iterations/epoch
    out, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err
    runs = store_runs(sweep_id)
    assert [r["state"] for r in runs] == ["finished", "finished"], [(r["state"], r["error"]) for r in runs]
    for run in runs:
        assert [h["_step"] for h in run["history"]] == [22, 44, 66]  # one row per evaluation, as it happened
        assert run["summary"]["validation/accuracy"] == run["history"][-1]["validation/accuracy"] > 0.5
        # what the sweep saw live is what wandb recorded: the same rows in the run's .wandb file
        logged = [r for r in history(run_file(Path(run["run_dir"]))) if "validation/accuracy" in r]
        assert [(r["_step"], r["validation/accuracy"]) for r in logged] == [
            (h["_step"], h["validation/accuracy"]) for h in run["history"]]
        assert "training/loss" in run["summary"]  # the iteration logs reach the summary, not the history
        assert run["summary"]["exit_code"] == 0 and run["run_dir"]
        # the program saw its config through argparse (${args}) and its run through WANDB_RUN_ID
        assert Path(run["run_dir"]).name.endswith(run["id"])
    report = in_tmp / "report.html"
    result = cli("report", sweep_id, "-o", str(report))
    assert result.returncode == 0, result.stderr
    assert f"{runs[0]['id']} (finished)" in report.read_text()  # its validation curve is drawn


def test_hyperband_stops_a_poor_program_run_with_sigterm(in_tmp: Path) -> None:
    parameters = {"lr": {"values": [0.5, 0.4, 1e-7]}, "epochs": {"value": 4}, "sleep": {"value": 0.5}}
    body = {**IGNITE_SWEEP, "method": "grid", "parameters": parameters}
    sweep_id = create(program_sweep(in_tmp, body))
    result = cli("agent", sweep_id)
    assert result.returncode == 0, result.stderr
    runs = store_runs(sweep_id)
    assert [r["state"] for r in runs] == ["finished", "finished", "stopped"], [(r["state"], r["error"]) for r in runs]
    poor = runs[2]
    assert len(poor["history"]) < 4 and poor["summary"]["stopped_by"] == "sweep"
    assert poor["summary"]["exit_code"] == -signal.SIGTERM  # stopped by the SIGTERM, no SIGKILL needed
    assert poor["error"] is None


def test_args_no_hyphens_and_nested_parameters_reach_wandb_config(in_tmp: Path) -> None:
    (in_tmp / "show.py").write_text(
        "import json, os, sys\nimport wandb\n"
        "run = wandb.init()\n"
        "json.dump({'argv': sys.argv[1:], 'config': dict(run.config), 'id': run.id, 'group': run.group,\n"
        "           'python': sys.executable, 'param_path': os.environ['WANDB_SWEEP_PARAM_PATH']},\n"
        "          open(f'seen-{run.id}.json', 'w'))\n"
        "run.log({'score': run.config['optimizer']['lr'] * 10})\n"
        "run.finish()\n"
    )
    body = {"program": "show.py", "method": "grid", "metric": {"name": "score", "goal": "maximize"},
            "command": ["${env}", "${interpreter}", "${program}", "--", "${args_no_hyphens}"],
            "parameters": {"epochs": {"value": 2},
                           "optimizer": {"parameters": {"name": {"values": ["adam"]}, "lr": {"values": [0.1, 0.2]}}}}}
    sweep_id = create(program_sweep(in_tmp, body))
    result = cli("agent", sweep_id)
    assert result.returncode == 0, result.stderr
    runs = store_runs(sweep_id)
    assert [r["state"] for r in runs] == ["finished", "finished"], [(r["state"], r["error"]) for r in runs]
    for run in runs:
        seen = json.loads((in_tmp / f"seen-{run['id']}.json").read_text())
        assert seen["id"] == run["id"] and seen["group"]  # WANDB_RUN_ID; grouped by sweep
        assert seen["config"] == run["config"] and seen["config"]["optimizer"]["name"] == "adam"
        assert seen["argv"][0] == "--" and "epochs=2" in seen["argv"]
        assert f"optimizer={run['config']['optimizer']}" in seen["argv"]  # as wandb agent formats it: str(dict)
        assert Path(seen["python"]).parent == Path(sys.executable).parent  # the agent's own environment
        params = yaml.safe_load(Path(seen["param_path"]).read_text())
        assert params["optimizer"] == {"value": run["config"]["optimizer"]}
        assert run["summary"]["score"] == pytest.approx(run["config"]["optimizer"]["lr"] * 10)
    assert sorted(r["config"]["optimizer"]["lr"] for r in runs) == [0.1, 0.2]


def test_a_program_that_ignores_sigterm_is_killed_after_the_kill_delay(in_tmp: Path) -> None:
    (in_tmp / "stubborn.py").write_text(
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open('started', 'w').close()\ntime.sleep(300)\n"
    )
    body = {"program": "stubborn.py", "method": "grid", "parameters": {"x": {"values": [1]}}}
    sweep_id = create(program_sweep(in_tmp, body))
    agent = start_agent(sweep_id, "--kill-delay", "2")
    wait_for(lambda: (in_tmp / "started").exists(), what="the program to start")
    cancelled = time.monotonic()
    assert cli("cancel", sweep_id).returncode == 0  # running runs stop now
    agent.communicate(timeout=60)
    took = time.monotonic() - cancelled
    (run,) = store_runs(sweep_id)
    assert run["state"] == "stopped" and "kill-delay" in run["error"]
    assert run["summary"]["exit_code"] == -signal.SIGKILL
    assert 2 <= took < 20


def test_a_program_that_exits_1_is_failed_with_its_last_stderr_line(in_tmp: Path) -> None:
    (in_tmp / "bad.py").write_text(
        "import sys\nprint('loading data', file=sys.stderr)\nsys.exit('ValueError: lr must be positive')\n"
    )
    body = {"program": "bad.py", "method": "grid", "parameters": {"lr": {"values": [-1]}}}
    sweep_id = create(program_sweep(in_tmp, body))
    result = cli("agent", sweep_id)
    (run,) = store_runs(sweep_id)
    assert run["state"] == "failed" and run["error"] == "ValueError: lr must be positive"
    assert "ValueError: lr must be positive" in result.stderr  # the program's stderr passes through


def test_a_shell_script_without_wandb_runs_and_finishes_with_no_metric(in_tmp: Path) -> None:
    (in_tmp / "train.sh").write_text('#!/bin/sh\necho "$@" >> args.txt\n')
    body = {"method": "bayes", "metric": {"name": "loss", "goal": "minimize"},
            "command": ["sh", "train.sh", "${args}"], "parameters": {"x": {"min": 0.0, "max": 1.0}}}
    sweep_id = create(program_sweep(in_tmp, body))
    result = cli("agent", sweep_id, "--count", "3", "--fuse", "2")  # a program's runs never train together
    assert result.returncode == 0, result.stderr
    assert "--fuse 2: runs of a program cannot train together (only the built-in trainer's can): one run at a time" \
        in result.stderr
    runs = store_runs(sweep_id)
    assert [r["state"] for r in runs] == ["finished"] * 3 and all(r["summary"]["exit_code"] == 0 for r in runs)
    assert len({r["pid"] for r in runs}) == 3
    assert all(r["history"] == [] and "loss" not in r["summary"] for r in runs)
    lines = (in_tmp / "args.txt").read_text().splitlines()
    assert [line.split("=")[0] for line in lines] == ["--x"] * 3  # bayes went on without a metric, as W&B's does
    assert result.stderr.count("finished but never logged loss (the sweep's metric) nor anything else") == 3
    assert result.stderr.count("the sweep is not receiving its metric: 3 runs in a row never logged loss") == 1


def test_runs_that_never_log_the_metric_are_said_so_and_bayes_learns_nothing_from_them(in_tmp: Path) -> None:
    (in_tmp / "typo.py").write_text("import wandb\nrun = wandb.init()\n"
                                    "run.log({'acc': run.config['lr'], 'epoch': 1})\nrun.finish()\n")  # fmt: skip
    body = {"program": "typo.py", "method": "bayes", "metric": {"name": "val_acc", "goal": "maximize"},
            "parameters": {"lr": {"min": 0.0, "max": 1.0}}}  # fmt: skip
    sweep_id = create(program_sweep(in_tmp, body))
    result = cli("agent", sweep_id, "--count", "2")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning: run ")]
    note = "never logged val_acc (the sweep's metric); it logged acc, epoch: did you mean acc?"
    assert len(lines) == 2 and all(line.endswith(f"finished but {note}") for line in lines), result.stderr
    runs = store_runs(sweep_id)
    assert all(r["state"] == "finished" and r["error"] == note for r in runs)
    status = cli("status", sweep_id)
    assert "never logged val_acc" in status.stdout
    # bayes: the same suggestion with or without these runs (the engine would have imputed them a value)
    import numpy as np

    from ignite_sweep.engine import next_params

    config = yaml.safe_load((in_tmp / "sweep.yaml").read_text())
    scored = [{"id": "a", "state": "finished", "config": {"lr": 0.5}, "history": [{"val_acc": 0.7}],
               "summary": {"val_acc": 0.7}}]  # fmt: skip
    suggestions = []
    for rows in (scored, scored + runs):
        np.random.seed(0)
        suggestions.append(next_params(config, rows)[0])
    assert suggestions[0] == suggestions[1]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (None, ["/usr/bin/env", "python", "train.py", "--lr=0.1", "--flag=True", "--name=a"]),
        (["${env}", "${interpreter}", "${program}", "${args_no_boolean_flags}"],
         ["/usr/bin/env", "python", "train.py", "--lr=0.1", "--flag", "--name=a"]),
        (["python", "${program}", "${args_json}"], ["python", "train.py", '{"lr": 0.1, "flag": true, "name": "a"}']),
        (["python", "${program}", "${args_no_equals}", "${unknown}"],
         ["python", "train.py", "--lr", "0.1", "--flag", "True", "--name", "a"]),
        (["hydra.py", "${args_override_hydra}", "x=${envvar:IGNITE_SWEEP_TEST_VAR}"],
         ["hydra.py", "++lr=0.1", "++flag=True", "++name=a", "x=from-env"]),
    ],
)
def test_command_macros_expand_as_wandb_agent_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   command: list[str] | None, expected: list[str]) -> None:  # fmt: skip
    monkeypatch.setenv("IGNITE_SWEEP_TEST_VAR", "from-env")
    config = {"program": "train.py", **({"command": command} if command else {})}
    argv, env = build_command(config, "r1", {"lr": 0.1, "flag": True, "name": "a"}, "sw1", str(tmp_path))
    assert argv == expected
    assert env["WANDB_RUN_ID"] == "r1" and env["WANDB_DIR"] == str(tmp_path)
    assert env["WANDB_SWEEP_PARAM_PATH"] == str(tmp_path / "wandb" / "sweep-sw1" / "config-r1.yaml")


def test_args_json_file_is_written_where_wandb_agent_writes_it(tmp_path: Path) -> None:
    config = {"program": "p.py", "command": ["python", "${program}", "--config", "${args_json_file}"]}
    argv, _ = build_command(config, "r2", {"a": 1}, "sw1", str(tmp_path))
    path = tmp_path / "wandb" / "sweep-sw1" / "config-r2.json"
    assert argv == ["python", "p.py", "--config", str(path)] and json.loads(path.read_text()) == {"a": 1}


def test_create_accepts_a_public_style_program_sweep_with_the_programs_own_names(in_tmp: Path) -> None:
    body = {"program": "ignite_digits.py", "method": "random", "metric": {"name": "val_loss", "goal": "minimize"},
            "parameters": {"learning_rate": {"min": 0.0001, "max": 0.1, "distribution": "log_uniform"},
                           "model_config": {"parameters": {"depth": {"values": [2, 4]}}},
                           "train.trainer.optimizer.lr": {"values": [0.1]}}}  # fmt: skip
    result = cli("create", str(program_sweep(in_tmp, body)), "--backend", "local")
    assert result.returncode == 0, result.stderr
    assert "created random sweep of ignite_digits.py over learning_rate, model_config" in result.stdout
    assert "log_uniform" in result.stderr and "warning" in result.stderr  # deprecated: accepted with W&B's warning


SHOW = (  # as many public scripts do: wandb only under a sweep agent (WANDB_SWEEP_ID set)
    "import json, os, sys\nimport wandb\n"
    "if 'WANDB_SWEEP_ID' in os.environ:\n"
    "    run = wandb.init()\n"
    "    env = sorted(k for k in ('WANDB_SWEEP_ID', 'WANDB_RUN_ID', 'WANDB_SWEEP_PARAM_PATH', 'WANDB_DIR',\n"
    "                             'WANDB_PROJECT') if os.environ.get(k))\n"
    "    json.dump({'argv': sys.argv[1:], 'config': dict(run.config), 'env': env,\n"
    "               'sweep_id': run.sweep_id == os.environ['WANDB_SWEEP_ID']}, open(f'seen-{run.id}.json', 'w'))\n"
    "    run.log({'score': run.config['lr'] * 10})\n"
    "    run.finish()\n"
)


def test_the_w_and_b_backend_runs_a_program_sweep_as_wandb_agent_and_the_local_one_matches_it(
    in_tmp: Path, wandb_standin: Any
) -> None:
    """The same program sweep on both backends: W&B's own CLI agent logic (on the stand-in) and the local agent
    hand the program the same command line, the same wandb.config and the same W&B variables (WANDB_SWEEP_ID
    too: the program calls wandb.init only when it is set)."""
    (in_tmp / "show.py").write_text(SHOW)
    body = {"program": "show.py", "method": "grid", "metric": {"name": "score", "goal": "maximize"},
            "command": ["${env}", "${interpreter}", "${program}", "${args_no_boolean_flags}", "--json",
                        "${args_json}"],
            "parameters": {"lr": {"values": [0.1]}, "amp": {"value": True}, "tag": {"value": "a b"},
                           "opt": {"parameters": {"name": {"value": "sgd"}}}}}  # fmt: skip
    path = program_sweep(in_tmp, body)
    seen = {}
    for backend in ("wandb", "local"):
        created = cli("create", str(path), "--backend", backend, "--project", "digits")
        assert created.returncode == 0, created.stderr
        sweep_id = created.stdout.strip().splitlines()[-1]
        result = cli("agent", sweep_id)
        assert result.returncode == 0, result.stderr
        (record,) = json.loads(cli("status", sweep_id, "--json").stdout)["runs"]
        assert record["state"] == "finished" and record["summary"]["score"] == pytest.approx(1.0), record
        seen[backend] = json.loads((in_tmp / f"seen-{record['id']}.json").read_text())
    assert seen["wandb"] == seen["local"]
    argv = seen["local"]["argv"]
    assert sorted(argv[:4]) == ["--amp", "--lr=0.1", "--opt={'name': 'sgd'}", "--tag=a b"] and argv[4] == "--json"
    assert json.loads(argv[5]) == {"amp": True, "lr": 0.1, "opt": {"name": "sgd"}, "tag": "a b"}
    assert seen["local"]["config"] == {"amp": True, "lr": 0.1, "opt": {"name": "sgd"}, "tag": "a b"}
    assert len(seen["local"]["env"]) == 5 and seen["local"]["sweep_id"]  # the run is the sweep's, in wandb too


NOTEBOOK = '''
import json, os, sys, time
import ignite_sweep
import wandb

def train():
    run = wandb.init()
    for epoch in range(1, run.config["epochs"] + 1):
        run.log({"epoch": epoch, "acc": run.config["lr"] * epoch})
        time.sleep(float(os.environ.get("SLOW", "0")))
    run.finish()

config = {"method": "grid", "metric": {"name": "acc", "goal": "maximize"},
          "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
          "parameters": {"lr": {"values": [0.3, 0.2, 0.0001]}, "epochs": {"value": 4}}}
sweep_id = ignite_sweep.sweep(config, backend="local")
result = ignite_sweep.agent(sweep_id, function=train)
print(json.dumps({"sweep_id": sweep_id, "runs": result.runs}))
'''


def test_the_python_api_runs_a_notebook_style_function_with_live_metrics_and_stops(in_tmp: Path) -> None:
    """ignite_sweep.sweep(config) + ignite_sweep.agent(id, function=fn), as one would call wandb's: the
    function's own parameters; each run forked, its wandb.log reaching the sweep live (hyperband stops the
    poor one by SIGTERM)."""
    (in_tmp / "notebook.py").write_text(NOTEBOOK)
    result = subprocess.run([sys.executable, "notebook.py"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "SLOW": "0.5"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["runs"] == 3
    runs = store_runs(out["sweep_id"])
    assert [r["state"] for r in runs] == ["finished", "finished", "stopped"], [(r["state"], r["error"]) for r in runs]
    assert [h["acc"] for h in runs[0]["history"]] == pytest.approx([0.3, 0.6, 0.9, 1.2])
    assert runs[0]["summary"]["acc"] == pytest.approx(1.2) and len(runs[2]["history"]) < 4
    stopped = runs[2]
    assert stopped["summary"]["exit_code"] == -signal.SIGTERM  # ended by the stop's signal, after:
    assert "acc" in summary(run_file(Path(stopped["run_dir"])))  # its wandb run was finished, not cut off


def test_a_function_sweep_run_without_its_function_is_one_clear_line(in_tmp: Path) -> None:
    import ignite_sweep

    sweep_id = ignite_sweep.sweep({"method": "grid", "parameters": {"hidden": {"values": [1]}}}, backend="local")
    result = cli("agent", sweep_id)
    assert result.returncode == 1 and "made for a function" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_interrupts_a_program_run_and_the_next_agent_runs_it_again(in_tmp: Path) -> None:
    (in_tmp / "slow.py").write_text(
        "import sys, time\nimport wandb\nrun = wandb.init()\n"
        "for i in range(1, 200):\n    run.log({'score': i})\n    open('progress', 'w').write(str(i))\n"
        "    time.sleep(0.1 if run.config['x'] == 1 else 0)\n    if i == 5 and run.config['x'] == 2: break\n"
        "run.finish()\n"
    )
    body = {"program": "slow.py", "method": "grid", "metric": {"name": "score", "goal": "maximize"},
            "parameters": {"x": {"values": [1]}}}  # fmt: skip
    sweep_id = create(program_sweep(in_tmp, body))
    agent = start_agent(sweep_id)
    wait_for(lambda: (in_tmp / "progress").exists() and int((in_tmp / "progress").read_text() or 0) >= 3,
             what="the program to log")  # fmt: skip
    agent.send_signal(signal.SIGINT)
    _, err = agent.communicate(timeout=60)
    assert agent.returncode == 130, err
    (run,) = store_runs(sweep_id)
    assert run["state"] == "interrupted" and run["error"].startswith("interrupted (SIGTERM)"), run
    assert run["summary"]["exit_code"] == -signal.SIGTERM and run["history"]  # it had reported before
    result = cli("agent", sweep_id, timeout=120)
    assert result.returncode == 0, result.stderr
    first, again = store_runs(sweep_id)
    assert again["retry_of"] == first["id"] and again["state"] == "finished"


def test_a_program_killed_by_a_signal_not_ours_is_crashed_and_retried(in_tmp: Path) -> None:
    (in_tmp / "oom.py").write_text(
        "import os, signal\nif not os.path.exists('once'):\n"
        "    open('once', 'w').close()\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    body = {"program": "oom.py", "method": "grid", "parameters": {"x": {"values": [1]}}}
    sweep_id = create(program_sweep(in_tmp, body))
    result = cli("agent", sweep_id)
    assert result.returncode == 0, result.stderr
    first, retry = store_runs(sweep_id)
    assert first["state"] == "crashed" and first["error"] == "killed by SIGKILL"
    assert retry["retry_of"] == first["id"] and retry["state"] == "finished"


@pytest.mark.parametrize(
    ("code", "stopped_by", "interrupted", "expected"),
    [
        (0, None, False, "finished"),
        (3, None, False, "failed"),
        (-9, None, False, "crashed"),
        (-15, "sweep", False, "stopped"),
        (-15, "sweep", True, "stopped"),  # Ctrl-C during a hyperband stop's kill delay: still the sweep's result
        (-15, "SIGTERM", False, "stopped"),  # `cancel` signals the run's process
        (-15, "SIGTERM", True, "interrupted"),
        (-2, "SIGINT", False, "interrupted"),
        (-40, None, False, "crashed"),  # a real-time signal has no name
    ],
)
def test_program_outcomes(code: int, stopped_by: str | None, interrupted: bool, expected: str) -> None:
    from ignite_sweep.states import Ending, end_state

    state, error = end_state(Ending(code=code, stopped_by=stopped_by, agent_interrupted=interrupted,
                                    last_error=lambda: "ValueError: bad"))  # fmt: skip
    assert state == expected
    assert (error == "ValueError: bad") == (expected == "failed")


@pytest.mark.parametrize(
    ("ending", "expected"),
    [  # the built-in trainer's summary, a run that raised, a process that died: decided where programs' ends are
        ({"status": "early-stopped"}, ("finished", None)),
        ({"status": "stopped", "stopped_by": "sweep"}, ("stopped", None)),
        ({"status": "diverged"}, ("failed", "diverged: the loss became NaN or infinite")),
        ({"status": "interrupted", "stopped_by": "SIGINT", "epochs": 2},
         ("interrupted", "interrupted (SIGINT) after 2 epochs")),
        ({"raised": "ValueError: bad", "status": "finished"}, ("failed", "ValueError: bad")),
        ({"twice": True}, ("interrupted", "interrupted twice: ended without its final evaluation")),
        ({"died": "killed by SIGKILL"}, ("crashed", "killed by SIGKILL")),
        ({"died": "killed by SIGKILL", "agent_interrupted": True}, ("interrupted", "killed by SIGKILL")),
    ],
)
def test_every_kind_of_run_ends_through_one_decision(ending: dict, expected: tuple) -> None:
    from ignite_sweep.states import Ending, end_state

    assert end_state(Ending(**ending)) == expected


def test_the_live_hook_never_breaks_the_program(tmp_path: Path) -> None:
    """An unwritable metrics file, a step that goes back, values that are no numbers: the program's own wandb
    logging goes on exactly as without the hook."""
    from ignite_sweep.execution.program import LIVE_DIR

    program = tmp_path / "p.py"
    program.write_text(
        "import numpy as np\nimport wandb\nrun = wandb.init()\n"
        "run.log({'a': 1, 'img': 'x', 'arr': np.zeros(3), 'n': np.float32(2.5)}, step=5)\n"
        "run.log({'a': 2}, step=3)\n"  # wandb drops a step that goes back
        "run.log({'a': 3}, step=6)\nrun.finish()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(LIVE_DIR), "WANDB_RUN_ID": "hook1", "WANDB_SILENT": "true"}
    broken = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=120,
                            env={**env, "IGNITE_SWEEP_METRICS_FILE": "/nonexistent/dir/m.jsonl"})  # fmt: skip
    assert broken.returncode == 0 and "Traceback" not in broken.stderr, broken.stderr
    metrics = tmp_path / "m.jsonl"
    env["WANDB_RUN_ID"] = "hook2"
    ok = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=120,
                        env={**env, "IGNITE_SWEEP_METRICS_FILE": str(metrics)})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [(e["step"], e["metrics"]) for e in lines] == [(5, {"a": 1, "n": 2.5}), (6, {"a": 3})]
    assert {e["run"] for e in lines} == {"hook2"}


FAN_OUT = '''
import multiprocessing, os, signal, sys, time
if os.path.exists("again"):  # the retry
    sys.exit(0)

def note():
    with open("pids", "a") as f:
        f.write(f"{os.getpid()}\\n")

def child():
    note()
    if os.fork() == 0:  # a grandchild that ignores SIGTERM and leaves the program's group and session
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.setsid()
        note()
        time.sleep(600)
        os._exit(0)
    time.sleep(600)

if __name__ == "__main__":
    note()
    for _ in range(2):
        multiprocessing.Process(target=child).start()
    time.sleep(600)
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the keeper is Linux's (subreaper, /proc)")
def test_kill_9_of_the_agents_job_leaves_no_process_of_the_program_and_the_run_is_run_again(in_tmp: Path) -> None:
    """A program that fans out (multiprocessing children, each with a grandchild that ignores SIGTERM and left
    the session): `kill -9` of the agent's process group (a terminal's job: the agent and its run's supervisor)
    ends every process of the program within seconds; the run is crashed and the next agent runs it again."""
    (in_tmp / "fan.py").write_text(FAN_OUT)
    body = {"program": "fan.py", "method": "grid", "parameters": {"x": {"values": [1]}}}
    sweep_id = create(program_sweep(in_tmp, body))
    agent = subprocess.Popen([sys.executable, "-m", "ignite_sweep", "agent", sweep_id], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    pids_file = in_tmp / "pids"
    pids = wait_for(lambda: pids_file.exists() and len(p := pids_file.read_text().split()) == 5 and p,
                    timeout=60, what="the program, its 2 children and 2 grandchildren")  # fmt: skip
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait(timeout=10)
    left = lambda: [p for p in map(int, pids) if _alive(p)]  # noqa: E731
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not left(), timeout=10, what="the program's processes to end")
    assert not left(), f"still running after the agent's kill -9: {left()}"
    (in_tmp / "again").touch()
    result = cli("agent", sweep_id, timeout=120)
    assert result.returncode == 0, result.stderr
    first, again = store_runs(sweep_id)
    assert first["state"] == "crashed" and again["retry_of"] == first["id"] and again["state"] == "finished"


OWN_RUN_WITH_A_CHILD_RUN = """\
import os, subprocess, sys
import wandb
run = wandb.init()
run.log({"score": 0.25}, step=1)
# a child process that inherits the environment (the live hook included) and logs to a W&B run of its own: out
# of the sweep's variables, with which wandb would ignore its id and take the sweep run's
child = ("import os, sys, wandb\\n"
         "for name in ('WANDB_SWEEP_ID', 'WANDB_RUN_ID', 'WANDB_SWEEP_PARAM_PATH'):\\n"
         "    os.environ.pop(name)\\n"
         "other = wandb.init(id=sys.argv[1], group='children')\\n"
         "other.log({'score': 1000000.0, 'child_only': 1})\\n"
         "other.finish()\\n")
subprocess.run([sys.executable, "-c", child, "child" + run.id], check=True)
run.log({"score": 0.5}, step=2)
run.finish()
"""


def test_a_child_process_with_a_wandb_run_of_its_own_feeds_nothing_to_the_sweep(in_tmp: Path) -> None:
    """A program's child inherits the live hook with the environment; it logs the sweep's metric, with a wild
    value, to a W&B run of its own id. The sweep's run is the program's W&B run only: its history and summary hold
    none of the child's values (though the hook recorded them, under the child's run id)."""
    from ignite_sweep.execution.program import sweep_folder

    (in_tmp / "own.py").write_text(OWN_RUN_WITH_A_CHILD_RUN)
    body = {"program": "own.py", "method": "grid", "metric": {"name": "score", "goal": "maximize"},
            "parameters": {"x": {"values": [1]}}}  # fmt: skip
    sweep_id = create(program_sweep(in_tmp, body))
    result = cli("agent", sweep_id)
    assert result.returncode == 0, result.stderr
    (run,) = store_runs(sweep_id)
    assert run["state"] == "finished", (run["state"], run["error"])
    assert [(h.get("_step"), h["score"]) for h in run["history"]] == [(1, 0.25), (2, 0.5)], run["history"]
    assert run["summary"]["score"] == 0.5 and "child_only" not in run["summary"], run["summary"]
    seen = sweep_folder(in_tmp, sweep_id.split("/", 1)[1]) / f"metrics-{run['id']}.jsonl"
    lines = [json.loads(line) for line in seen.read_text().splitlines()]
    assert {(e["run"], e["metrics"]["score"]) for e in lines} == {
        (run["id"], 0.25), (run["id"], 0.5), ("child" + run["id"], 1000000.0)}  # the child did log, and was seen


def test_the_live_metrics_reader_keeps_its_own_runs_rows_only(tmp_path: Path) -> None:
    """``ProgramRun.new_rows`` over a metrics file where two W&B runs wrote (the program's, and another process's
    that inherited the hook): only the program's own rows (and rows without a run id: a hook that could not tell)
    come back, each once, in order; a line still being written waits for its end."""
    from ignite_sweep.execution.program import ProgramRun

    path = tmp_path / "metrics.jsonl"
    reader = ProgramRun(None, {"WANDB_RUN_ID": "mine"}, path)

    def line(run: str | None, step: int, value: float) -> bytes:
        return (json.dumps({"run": run, "step": step, "pid": 1, "metrics": {"score": value}}) + "\n").encode()

    path.write_bytes(line("mine", 1, 0.1) + line("other", 1, 99.0) + line(None, 2, 0.2) + line("other", 2, 98.0))
    assert reader.new_rows() == [{"score": 0.1, "_step": 1}, {"score": 0.2, "_step": 2}]
    half = line("mine", 3, 0.3)
    with open(path, "ab") as f:
        f.write(line("other", 3, 97.0) + half[:10])
    assert reader.new_rows() == []
    with open(path, "ab") as f:
        f.write(half[10:] + line("other", 4, 96.0))
    assert reader.new_rows() == [{"score": 0.3, "_step": 3}]
    assert reader.new_rows() == []
