"""A PostgreSQL store that is away for a while (a restart, an upgrade, a failover) loses no run: agents and runs
wait for it (bounded, IGNITE_SWEEP_STORE_WAIT_S), runs train on meanwhile and their evaluations are recorded when
it is back; past the bound the agent stops in one line naming the store (no password). A server of the test's own
(the shared one serves other tests meanwhile), stopped for seconds at a time: every operation in that window meets
it away, so the timing is forced, not hoped for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pg_server
import pytest
from sweep_helpers import cli, create, store_runs, sweep_file, wait_for


@pytest.fixture
def own_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    if not pg_server.available():
        if os.environ.get("IGNITE_SWEEP_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (IGNITE_SWEEP_REQUIRE_POSTGRES) but initdb/pg_ctl are missing")
        pytest.skip("no PostgreSQL server: install Debian's postgresql package (CI does)")
    root = Path("/tmp") / f"ignite-sweep-pg-away-{uuid.uuid4().hex[:8]}"  # short: the socket path
    monkeypatch.setenv("IGNITE_SWEEP_STORE", pg_server.start(root))
    try:
        yield root
    finally:
        pg_server.stop(root)
        shutil.rmtree(root, ignore_errors=True)


def agent(sweep_id: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ignite_sweep", "agent", sweep_id, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def evaluating(sweep_id: str, seen: set[str]) -> str:
    """A running run, not one of ``seen``, that has recorded an evaluation."""
    run = wait_for(lambda: next((r for r in store_runs(sweep_id) if r["state"] == "running" and r["history"]
                                 and r["id"] not in seen), None), what="a new run that has evaluated")  # fmt: skip
    seen.add(run["id"])
    return run["id"]


def test_two_slots_go_on_through_store_restarts_and_each_point_runs_once(own_postgres: Path, tmp_path: Path) -> None:
    grid = {"lr": {"values": [0.01, 0.02, 0.03, 0.04]}, "epochs": {"value": 3}}
    sweep_id = create(sweep_file(tmp_path, parameters=grid))
    pool = agent(sweep_id, "--workers", "2")
    lines: list[str] = []  # the pool's lines and the slots' warnings, as they come
    readers = [threading.Thread(target=lambda f=f: lines.extend(f), daemon=True) for f in (pool.stdout, pool.stderr)]
    for reader in readers:
        reader.start()

    def met() -> int:  # what met the store away: an agent or a run's end waited, a run at an evaluation trained on
        return sum("is away (" in line or "training goes on" in line for line in list(lines))

    seen: set[str] = set()
    for _ in range(2):  # twice, while runs train: away for at least 3 s, and until something met it (a slow machine)
        evaluating(sweep_id, seen)
        before, started = met(), time.monotonic()
        pg_server.stop(own_postgres)
        wait_for(lambda before=before: met() > before, timeout=60, what="a store operation meeting the store away")
        time.sleep(max(0.0, 3 - (time.monotonic() - started)))
        pg_server.restart(own_postgres)
    assert pool.wait(timeout=300) == 0, "".join(lines)
    for reader in readers:
        reader.join(timeout=10)
    shown = "".join(lines)
    assert "Traceback" not in shown, shown
    assert met() >= 2 and ("is back" in shown or "is away (" not in shown), shown
    runs = store_runs(sweep_id)
    assert {r["state"] for r in runs} <= {"finished", "interrupted"}, [(r["state"], r["error"]) for r in runs]
    assert Counter(r["config"]["lr"] for r in runs if r["state"] == "finished") == {0.01: 1, 0.02: 1, 0.03: 1,
                                                                                    0.04: 1}  # fmt: skip
    assert all(len(r["history"]) == 3 for r in runs if r["state"] == "finished")  # no evaluation lost


def test_a_store_away_past_the_wait_stops_the_agent_in_one_line_and_nothing_is_lost(
    own_postgres: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGNITE_SWEEP_STORE_WAIT_S", "2")
    sweep_id = create(sweep_file(tmp_path, parameters={"lr": {"values": [0.01, 0.02]}, "epochs": {"value": 3}}))
    first = agent(sweep_id)
    evaluating(sweep_id, set())
    pg_server.stop(own_postgres)
    try:
        _, err = first.communicate(timeout=120)
    finally:
        pg_server.pause(own_postgres, 0)  # started again
    assert first.returncode == 1, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: machine fault: postgresql://postgres@127.0.0.1:") and "unreachable for 2 s" in line
    assert "the sweep lost nothing" in line and "Traceback" not in err, err
    result = cli("agent", sweep_id)
    assert result.returncode == 0, result.stderr
    runs = store_runs(sweep_id)
    # the run cut short is interrupted (no retry spent), not failed, nor found crashed: noted on this machine
    assert sorted(r["state"] for r in runs) == ["finished", "finished", "interrupted"], runs
    assert Counter(r["config"]["lr"] for r in runs if r["state"] == "finished") == {0.01: 1, 0.02: 1}
