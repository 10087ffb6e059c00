"""Shared by the benchmarks: run a sweep config through the real CLI on a throwaway store (local backend), or
against the local W&B API stand-in of the tests (W&B backend: the real wandb SDK, W&B's agent protocol)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


@contextlib.contextmanager
def wandb_stand_in(root: Path) -> Iterator[dict[str, str]]:
    """tests/wandb_server.py serving from this process; yields the env that points wandb at it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from wandb_server import API_KEY, WandbStandIn

    server = WandbStandIn(root).start()
    try:
        yield {"WANDB_BASE_URL": server.url, "WANDB_API_KEY": API_KEY, "WANDB_ERROR_REPORTING": "false",
               "WANDB_CONSOLE": "off", "WANDB_CONFIG_DIR": str(root / "wandb-config")}  # fmt: skip
    finally:
        server.stop()


def run_sweep(sweep: dict[str, Any], agent_args: list[str] | None = None, backend: str = "local",
              env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:  # fmt: skip
    """create + agent (timed) + status --json, runs offline, in a temporary folder. Returns (agent wall s, status)."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        extra = stack.enter_context(wandb_stand_in(Path(tmp))) if backend == "wandb" else {}
        env = {**os.environ, "IGNITE_SWEEP_DIR": tmp, "WANDB_DIR": tmp, "WANDB_MODE": "offline",
               "WANDB_SILENT": "true", **extra, **(env or {})}  # fmt: skip
        path = Path(tmp) / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep))
        cli = [sys.executable, "-m", "ignite_sweep"]
        created = subprocess.run([*cli, "create", str(path), "--backend", backend, "--project", "bench"], env=env,
                                 check=True, capture_output=True, text=True)  # fmt: skip
        sweep_id = created.stdout.strip().splitlines()[-1]
        start = time.perf_counter()
        subprocess.run([*cli, "agent", sweep_id, *(agent_args or [])], env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        status = subprocess.run([*cli, "status", sweep_id, "--json"], env=env, check=True, capture_output=True)
    return wall, json.loads(status.stdout)


def run_local_sweep(sweep: dict[str, Any], agent_args: list[str] | None = None) -> tuple[float, dict[str, Any]]:
    return run_sweep(sweep, agent_args)
