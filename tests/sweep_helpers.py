"""Helpers for sweep tests: write a sweep YAML, run the real CLI in a subprocess, read the real store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ignite_sweep.store.sql import LocalStore

FAST = {"dataset": {"value": "digits"}, "epochs": {"value": 1}, "log_interval": {"value": 50},
        "val_batch_size": {"value": 512}}  # fmt: skip


def sweep_file(tmp: Path, name: str = "sweep.yaml", **config: Any) -> Path:
    params = {**FAST, **config.pop("parameters", {})}
    body = {
        "method": "grid",
        "metric": {"name": "val/accuracy", "goal": "maximize"},
        **config,
        "parameters": params,
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(body))
    return path


def cli(*args: str, timeout: float = 300, **popen: Any) -> subprocess.CompletedProcess[str]:
    popen.setdefault("env", dict(os.environ))
    return subprocess.run(
        [sys.executable, "-m", "ignite_sweep", *args], capture_output=True, text=True, timeout=timeout, **popen,
    )  # fmt: skip


def start_agent(sweep_id: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ignite_sweep", "agent", sweep_id, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip


def create(path: Path) -> str:
    result = cli("create", str(path), "--backend", "local")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def store_runs(sweep_id: str) -> list[dict[str, Any]]:
    store = LocalStore()
    try:
        return store.runs(sweep_id.split("/", 1)[1], with_history=True)
    finally:
        store.close()


def wait_for(predicate: Any, timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def wait_for_evaluating_run(sweep_id: str) -> dict[str, Any]:
    """A run that is running in its own process and has reported at least one evaluation."""
    return wait_for(
        lambda: next((r for r in store_runs(sweep_id) if r["state"] == "running" and r["pid"] and r["history"]), None),
        what="a running run that has evaluated",
    )
