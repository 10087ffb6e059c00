from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@functools.cache
def cuda_available() -> bool:
    """Whether this machine has a CUDA device (the CUDA-only tests are skipped elsewhere), asked in another process:
    ``torch.cuda.is_available()`` initialises the CUDA driver, and then every run an agent in this process forks
    fails on CUDA ("initialization error")."""
    from ignite_sweep.training.fused import gpu_may_be_visible

    if not gpu_may_be_visible():
        return False
    asked = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)  # fmt: skip
    return asked.stdout.strip() == "True"


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the whole session: the digits cache is prepared once, not in every test."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(autouse=True)
def one_thread_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run a test starts trains on one thread. Agents run inside the pytest process fork from it, and its
    OpenMP pool (started by earlier tests) can deadlock a forked child that enters it (a real agent process never
    computes before it forks). And tests start agents side by side on a 2-core machine: two agents' runs with
    torch's default thread count each were measured 7x slower than with one thread each (OpenMP's spinning
    threads fight over the cores; `--workers` splits the cores for users, these tests check claims, not threads).
    """
    monkeypatch.setenv("IGNITE_SWEEP_THREADS", "1")  # forked runs (set in the child)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # processes a test starts: agents, a program's script


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


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An nvidia-smi on PATH, before the real one if any (test_group_size, test_fused_agent): it prints the file
    ``answer``, exits with ``code`` and logs its arguments."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\ncat {tmp_path}/answer\nexit $(cat {tmp_path}/code)\n')
    script.chmod(0o755)
    (tmp_path / "code").write_text("0")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server: the one .ci/run started (IGNITE_SWEEP_TEST_POSTGRES), else one started here
    from Debian's postgresql package. Skipped only where neither is possible and IGNITE_SWEEP_REQUIRE_POSTGRES
    is not set (CI sets it: there the PostgreSQL tests must run)."""
    import pg_server

    url = os.environ.get("IGNITE_SWEEP_TEST_POSTGRES")
    if url:
        yield url
        return
    if not pg_server.available():
        if os.environ.get("IGNITE_SWEEP_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (IGNITE_SWEEP_REQUIRE_POSTGRES) but initdb/pg_ctl are missing")
        pytest.skip("no PostgreSQL server: install Debian's postgresql package (CI does)")
    root = Path("/tmp") / f"ignite-sweep-pg-{os.getpid()}"  # short: the socket path must fit in 107 bytes
    url = pg_server.start(root)
    try:
        yield url
    finally:
        pg_server.stop(root)
        shutil.rmtree(root, ignore_errors=True)  # 55 MB a session, left in /tmp until now


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh database on the server for one test."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The same test on a real SQLite file and on a real PostgreSQL database; set as IGNITE_SWEEP_STORE so the
    CLI and agents in subprocesses use it too."""
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    monkeypatch.setenv("IGNITE_SWEEP_STORE", url)
    return url
