"""The README's commands typed in a real terminal (a pty), where the progress bar, the live pool view and
rich's tables take their terminal paths. No test used a terminal before, and every run failed there."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from sweep_helpers import cli, sweep_file
from terminal import run_in_pty

IGNITE_SWEEP = [sys.executable, "-m", "ignite_sweep"]
PROGRESS_BAR = re.compile(r"Iteration: \[\d+/\d+\] +\d+%\|")  # Ignite's ProgressBar for a 1-epoch run


def test_run_in_a_terminal_finishes_its_runs_with_a_progress_bar(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"lr": {"values": [0.01, 0.05]}})
    code, screen = run_in_pty([*IGNITE_SWEEP, "run", str(path), "--backend", "local", "--count", "2"])
    assert code == 0, screen
    assert "Traceback" not in screen and "tqdm" not in screen, screen
    assert PROGRESS_BAR.search(screen), screen  # Ignite's ProgressBar, drawn because stderr is a terminal
    sweep_id = [line for line in screen.splitlines() if line.startswith("local/")][-1].strip()
    status = json.loads(cli("status", sweep_id, "--json").stdout)
    assert [r["state"] for r in status["runs"]] == ["finished", "finished"]


def test_train_in_a_terminal(offline_wandb: Path) -> None:
    code, screen = run_in_pty([sys.executable, "-m", "ignite_sweep.train", "--dataset=digits", "--epochs=1",
                               "--log_interval=50"])  # fmt: skip
    assert code == 0, screen
    assert PROGRESS_BAR.search(screen) and "finished after 1 epochs" in screen, screen


def test_pool_live_view_and_status_table_in_a_terminal(offline_wandb: Path) -> None:
    path = sweep_file(offline_wandb, parameters={"lr": {"values": [0.01, 0.05]}})
    code, screen = run_in_pty([*IGNITE_SWEEP, "run", str(path), "--backend", "local", "--workers", "2",
                               "--stagger", "0"])  # fmt: skip
    assert code == 0, screen
    assert "Traceback" not in screen, screen
    assert "slot" in screen and "cpu0" in screen and "cpu1" in screen, screen  # rich's live table
    assert "pool done: 2 slots, 2 finished" in screen, screen
    sweep_id = [line for line in screen.splitlines() if line.startswith("local/")][-1].strip()
    code, table = run_in_pty([*IGNITE_SWEEP, "status", sweep_id], cols=100)
    assert code == 0 and "val/accuracy (maximize)" in table and "* best run" in table, table


def test_a_program_sweep_in_a_terminal_gives_the_program_a_terminal(offline_wandb: Path) -> None:
    """As under `wandb agent`, the program's stderr is a terminal (its progress bars and colours take their
    terminal paths), and its last line still becomes the run's error."""
    script = offline_wandb / "tty.py"
    script.write_text("import sys\nprint('stderr is a tty:', sys.stderr.isatty(), file=sys.stderr)\n"
                      "sys.exit('RuntimeError: out of patience')\n")  # fmt: skip
    sweep = offline_wandb / "program.yaml"
    sweep.write_text(f"program: {script}\nmethod: grid\nparameters:\n  x:\n    values: [1]\n")
    code, screen = run_in_pty([*IGNITE_SWEEP, "run", str(sweep), "--backend", "local"])
    assert "stderr is a tty: True" in screen, screen
    assert "failed: RuntimeError: out of patience" in screen, screen


def test_the_own_script_example_runs_as_the_readme_says_in_a_terminal(tmp_path: Path) -> None:
    """README, "Sweep your own script": examples/own-script run from its folder with the console script."""
    import shutil

    folder = tmp_path / "own-script"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples" / "own-script", folder)
    script = Path(sys.executable).parent / "ignite-sweep"
    command = [str(script)] if script.exists() else IGNITE_SWEEP
    code, screen = run_in_pty(["sh", "-c", f"cd {folder} && {' '.join(command)} run sweep.yaml --backend local "
                               "--count 2"])  # fmt: skip
    assert code == 0, screen
    assert "created bayes sweep of train.py over lr, hidden, epochs" in screen, screen
    assert "Traceback" not in screen and "epoch 4: accuracy" in screen, screen  # the script's own output
    sweep_id = [line for line in screen.splitlines() if line.startswith("local/")][-1].strip()
    status = json.loads(cli("status", sweep_id, "--json", cwd=folder).stdout)
    assert [r["state"] for r in status["runs"]] == ["finished", "finished"], status
    assert all(r["summary"]["validation/accuracy"] > 0 for r in status["runs"])
