from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the whole session: the digits cache is prepared once, not in every test."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def one_thread_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """For agents run inside the pytest process: they fork from it, and its OpenMP pool (started by earlier
    tests) can deadlock a forked child that enters it. A real agent process never computes before it forks."""
    monkeypatch.setenv("IGNITE_SWEEP_THREADS", "1")


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test: wandb offline, writing under tmp_path; the sweep store under tmp_path too."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "ignite-sweep-tests")
    monkeypatch.setenv("IGNITE_SWEEP_DIR", str(tmp_path / ".ignite-sweep"))
    monkeypatch.setenv("IGNITE_SWEEP_DATA", str(shared_data_dir))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    yield tmp_path
    if "wandb" in sys.modules:  # wandb keeps process-wide settings (its dir) until torn down
        sys.modules["wandb"].teardown()


def offline_runs(root: Path) -> list[Path]:
    return sorted((root / "wandb").glob("offline-run-*"))


@pytest.fixture
def wandb_standin(tmp_path: Path, offline_wandb: Path) -> Iterator[Any]:
    """The local W&B API stand-in (tests/wandb_server.py) with the wandb env pointing at it, restored after
    (the SDK leaves WANDB_ENTITY/WANDB_PROJECT behind). Fails the test on any operation it did not answer."""
    from unittest import mock

    from wandb_server import API_KEY, WandbStandIn

    server = WandbStandIn(tmp_path).start()
    env = {
        "WANDB_BASE_URL": server.url, "WANDB_API_KEY": API_KEY, "WANDB_ERROR_REPORTING": "false",
        "WANDB_CONSOLE": "off", "WANDB__GRAPHQL_RETRY_MAX": "1", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "IGNITE_SWEEP_WANDB_HEARTBEAT_S": "0.2",
    }  # fmt: skip
    try:
        with mock.patch.dict(os.environ, env):
            yield server
    finally:
        server.stop()
    assert not server.unanswered, f"operations the stand-in did not answer: {server.unanswered}"
