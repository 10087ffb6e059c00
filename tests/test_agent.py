"""The agent's warm-up: what a run needs is imported once in the agent, not again in each forked run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys
from ignite_sweep.execution.process import warm_up
from ignite_sweep.training.config import TrainConfig
from ignite_sweep.training.data import load_digits
from ignite_sweep.training.train import train

warm_up()
load_digits(TrainConfig().data_dir)  # the digits cache exists, as after a sweep's first run
before = set(sys.modules)
summary = train(TrainConfig(dataset="digits", model="mlp", epochs=1, batch_size=256, log_interval=50))
heavy = ("torch", "ignite", "wandb", "sklearn", "scipy", "ignite_sweep")
late = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in heavy)
print(json.dumps({"status": summary["status"], "late": late}))
"""


def test_a_run_after_warm_up_imports_nothing_heavy(offline_wandb: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished"
    assert result["late"] == [], f"imported by the run, not by the agent's warm-up: {result['late']}"
