"""Shared by the benchmarks: run a sweep config through the real CLI on a throwaway local store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def run_local_sweep(sweep: dict[str, Any], agent_args: list[str] | None = None) -> tuple[float, dict[str, Any]]:
    """create + agent (timed) + status --json, offline, in a temporary folder. Returns (agent wall s, status)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "IGNITE_SWEEP_DIR": tmp, "WANDB_DIR": tmp, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
        path = Path(tmp) / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep))
        cli = [sys.executable, "-m", "ignite_sweep"]
        created = subprocess.run([*cli, "create", str(path), "--backend", "local"], env=env, check=True,
                                 capture_output=True, text=True)  # fmt: skip
        sweep_id = created.stdout.strip().splitlines()[-1]
        start = time.perf_counter()
        subprocess.run([*cli, "agent", sweep_id, *(agent_args or [])], env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        status = subprocess.run([*cli, "status", sweep_id, "--json"], env=env, check=True, capture_output=True)
    return wall, json.loads(status.stdout)
