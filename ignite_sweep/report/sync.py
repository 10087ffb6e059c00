"""Take a local sweep to W&B: ``wandb sync`` of its offline run folders.

Each run was logged offline with the sweep's name as its W&B group and ``local-sweep-<id>`` as a tag, so
the upload lands grouped and findable. No W&B server is reachable from CI: the tests check the exact
commands; ``ignite-sweep sync --dry-run`` prints them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ignite_sweep.backends.local import LocalBackend, short_id
from ignite_sweep.errors import BackendError, ConfigError


def run_dirs(backend: LocalBackend, sweep_id: str) -> list[Path]:
    """The offline run folders of a local sweep's runs that got as far as starting wandb, oldest first.

    A retry that resumed a checkpoint logged to its predecessor's W&B run id in a folder of its own: both
    folders are given, and ``wandb sync`` uploads folders of one run id in order of start, as one run."""
    found: dict[Path, None] = {}
    wandb_root = Path(os.environ.get("WANDB_DIR", ".")) / "wandb"
    for row in backend.store.runs(short_id(sweep_id)):
        if row["run_dir"] and Path(row["run_dir"]).is_dir():
            found[Path(row["run_dir"]).resolve()] = None
        for match in sorted(wandb_root.glob(f"offline-run-*-{row['wandb_id']}")):  # a crashed run's, too
            found[match.resolve()] = None
    return sorted(found, key=lambda d: d.name)


def sync_command(backend: LocalBackend, sweep_id: str, project: str | None, entity: str | None) -> list[str]:
    if not sweep_id.startswith("local/"):
        raise ConfigError(
            f"sweep id '{sweep_id}': sync uploads local sweeps (local/<id>); W&B sweeps are there already"
        )
    backend.sweep(sweep_id)
    dirs = run_dirs(backend, sweep_id)
    if not dirs:
        raise BackendError(
            f"sweep '{sweep_id}' has no offline run folders to upload (WANDB_DIR={os.environ.get('WANDB_DIR', '.')})"
        )
    stored = backend.store.sweep(short_id(sweep_id)) or {}
    command = [
        sys.executable,
        "-m",
        "wandb",
        "sync",  # wandb >= 0.30 syncs offline run folders given as paths (--include-offline was removed)
        "--project",
        project or stored.get("project", "ignite-sweep"),
    ]
    if entity:
        command += ["--entity", entity]
    return command + [str(d) for d in dirs]


def sync(sweep_id: str, project: str | None = None, entity: str | None = None, dry_run: bool = False) -> list[str]:
    command = sync_command(LocalBackend(), sweep_id, project, entity)
    if dry_run:
        return command
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BackendError(f"wandb sync failed (exit {result.returncode}): {last[0]}")
    return command
