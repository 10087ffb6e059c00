"""Machine faults are not results: a full disk (store, checkpoints, W&B folder), a read-only store folder and a
run killed by the OOM killer end in one line, exit 1, no `failed` run, and a later agent finishes the grid with
each point once. Real small file systems: a tmpfs mounted by the test (as root, as CI runs; skipped otherwise)."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep_helpers import cli, create, store_runs, sweep_file

GRID = {"lr": {"values": [0.01, 0.02]}}


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self, leave_kib: int) -> None:
        """A filler file that leaves ``leave_kib`` KiB free."""
        import os

        stat = os.statvfs(self.path)
        size = max(0, stat.f_bavail * stat.f_frsize - leave_kib * 1024)
        with open(self.path / "filler", "wb") as f:
            f.write(b"\0" * size)

    def free(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def one_fault_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: machine fault: ") and "the sweep lost nothing" in line, line
    assert all(w in line for w in words), line
    return line


def finishes_each_point_once(sweep_id: str) -> None:
    result = cli("agent", sweep_id)
    assert result.returncode == 0, result.stderr
    runs = store_runs(sweep_id)
    assert not [r for r in runs if r["state"] in ("failed", "crashed")], runs  # cut short: interrupted
    assert Counter(r["config"]["lr"] for r in runs if r["state"] == "finished") == {0.01: 1, 0.02: 1}


@pytest.mark.parametrize("full", ["checkpoints", "store", "wandb"])
def test_a_full_disk_stops_the_agent_in_one_line_and_the_sweep_goes_on_once_freed(
    full: str, small_disk: SmallDisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = {"checkpoints": "IGNITE_SWEEP_CHECKPOINTS", "store": "IGNITE_SWEEP_DIR", "wandb": "WANDB_DIR"}[full]
    monkeypatch.setenv(variable, str(small_disk.path))
    sweep_id = create(sweep_file(tmp_path, parameters=GRID))
    small_disk.fill(leave_kib=16)
    line = one_fault_line(cli("agent", sweep_id), str(small_disk.path), "no space left on device")
    assert "free space there" in line
    small_disk.free()
    finishes_each_point_once(sweep_id)


def test_a_store_folder_made_read_only_mid_sweep_is_one_line_and_nothing_is_lost(
    small_disk: SmallDisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGNITE_SWEEP_DIR", str(small_disk.path))
    sweep_id = create(sweep_file(tmp_path, parameters=GRID))
    assert cli("agent", sweep_id, "--count", "1").returncode == 0
    small_disk.remount("ro")
    try:
        one_fault_line(cli("agent", sweep_id), "read")
    finally:
        small_disk.remount("rw")
    finishes_each_point_once(sweep_id)


def test_running_out_of_gpu_memory_is_the_runs_failure_named_by_batch_size_and_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA's out-of-memory error (raised here by a user model, as torch raises it on a GPU) is a result of the
    config: `failed`, with one line saying what to change; the agent goes on."""
    (tmp_path / "oom_models.py").write_text(
        "import torch\n\nclass Huge(torch.nn.Module):\n"
        "    def __init__(self, in_channels, image_size, num_classes, dropout):\n"
        "        super().__init__()\n        self.fc = torch.nn.Linear(1, num_classes)\n"
        "    def forward(self, x):\n"
        "        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0)')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    path = sweep_file(tmp_path, parameters={"model": {"value": "oom_models:Huge"}, "batch_size": {"values": [512]}})
    sweep_id = create(path)
    result = cli("agent", sweep_id)
    assert result.returncode == 0, result.stderr
    (run,) = store_runs(sweep_id)
    assert run["state"] == "failed" and run["error"].startswith(
        "CUDA out of memory with batch_size 512, model oom_models:Huge (lower batch_size, or set amp: true)"), run


def test_a_program_that_fails_on_a_full_disk_is_interrupted_not_failed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A program's own script writing to a disk that is full (its last line in the system's words): the machine's
    fault; the agent stops in one line and the next one runs the point again."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "writes.py").write_text(
        "import errno, os, sys\nif not os.path.exists('freed'):\n"  # its last line, as a script's traceback ends
        "    sys.exit(f'OSError: [Errno 28] {os.strerror(errno.ENOSPC)}: ckpt/model.pt')\n"
    )
    (tmp_path / "sweep.yaml").write_text("program: writes.py\nmethod: grid\nparameters:\n  x: {values: [1]}\n")
    sweep_id = create(tmp_path / "sweep.yaml")
    one_fault_line(cli("agent", sweep_id), "no space left on device")
    (first,) = store_runs(sweep_id)
    assert first["state"] == "interrupted"
    (tmp_path / "freed").touch()
    assert cli("agent", sweep_id).returncode == 0
    assert [r["state"] for r in store_runs(sweep_id)] == ["interrupted", "finished"]


def test_a_store_folder_that_cannot_be_looked_at_is_a_machine_fault_not_an_error(tmp_path: Path) -> None:
    """The SQLite store's folder cannot even be stat'ed (here: a name too long for the file system; a dead network
    mount gives ESTALE or ENOTCONN the same way): the fault behind the store's error, not an error of classify's."""
    import errno
    import sqlite3

    from ignite_sweep import faults

    store = tmp_path / ("x" * 300) / "sweeps.db"
    fault = faults.classify(sqlite3.OperationalError("unable to open database file"), [], str(store))
    assert isinstance(fault, faults.MachineFault) and fault.code == errno.ENAMETOOLONG, fault
    assert fault.path == str(store.parent) and "file name too long" in str(fault)
