"""The store contract, on a real SQLite file and a real PostgreSQL database (``store_url``): the same tests, no
mock. Claims are exactly-once and run_cap-exact under concurrent agents (processes, and hosts on PostgreSQL)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import cli, create, store_runs, wait_for

from ignite_sweep.backends.local import LocalBackend
from ignite_sweep.errors import BackendError
from ignite_sweep.store.sql import SCHEMA_VERSION, LocalStore
from ignite_sweep.sweepfile import validate_sweep

GRID = {"method": "grid", "metric": {"name": "val/accuracy", "goal": "maximize"},
        "parameters": {"dataset": {"value": "digits"}, "lr": {"values": [round(0.01 * i, 2) for i in range(1, 13)]}}}


def test_the_store_records_sweeps_runs_and_history(store_url: str) -> None:
    store = LocalStore(store_url)
    store.add_sweep("s1", "first", {"method": "grid"}, "proj", 2)
    with store.transaction() as db:
        store.insert_run(db, {"id": "r1", "sweep_id": "s1", "config": {"lr": 0.1}, "search_info": {"a": [1]}})
        store.insert_run(db, {"id": "r2", "sweep_id": "s1", "config": {"lr": 0.2}})
        store.append_history(db, "r1", {"val/accuracy": 0.5})
        store.append_history(db, "r1", {"val/accuracy": 0.7})
        store.request_stop(db, ["r2"])
        assert store.run("r1")["state"] == "running"  # a read inside the transaction sees its writes
    store.heartbeat("r1", run_dir="/runs/r1")
    assert store.end_run("r1", "finished", {"val/accuracy": 0.7}) is True
    assert store.end_run("r1", "crashed") is False  # a run's end is recorded once
    runs = store.runs("s1", with_history=True)
    assert [(r["id"], r["seq"], r["state"]) for r in runs] == [("r1", 1, "finished"), ("r2", 2, "running")]
    assert runs[0]["history"] == [{"val/accuracy": 0.5}, {"val/accuracy": 0.7}] and runs[1]["should_stop"] == 1
    assert runs[0]["summary"] == {"val/accuracy": 0.7} and runs[0]["search_info"] == {"a": [1]}
    assert runs[0]["run_dir"] == "/runs/r1" and runs[0]["config"] == {"lr": 0.1}
    (sweep,) = store.sweeps()
    assert (sweep["id"], sweep["name"], sweep["n_runs"], sweep["config"]) == ("s1", "first", 2, {"method": "grid"})
    with pytest.raises(RuntimeError), store.transaction() as db:  # an error rolls the transaction back
        store.set_sweep_state(db, "s1", "stopped", "by test")
        raise RuntimeError
    assert store.sweep("s1")["state"] == "running"
    store.set_wandb_sweep("s1", "me", "proj", "old1")
    store.set_wandb_sweep("s1", "me", "proj", "sw1")  # `sync`: one W&B sweep per local sweep, entity and project
    assert (store.wandb_sweep("s1", "me", "proj"), store.wandb_sweep("s1", "me", "other")) == ("sw1", None)
    store.close()
    assert LocalStore(store_url).run("r1")["state"] == "finished"  # reopened: it persisted


def test_a_dead_pid_is_only_checked_on_its_own_host(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = LocalStore(store_url)
    store.add_sweep("s1", "s", {}, "p", 2)
    for host in ("node-a", "node-b"):
        monkeypatch.setenv("IGNITE_SWEEP_HOST", host)
        with store.transaction() as db:
            store.insert_run(db, {"id": f"on-{host}", "sweep_id": "s1", "config": {}, "pid": dead.pid})
    monkeypatch.setenv("IGNITE_SWEEP_HOST", "node-a")
    with store.transaction() as db:
        assert store.reap_stale(db, "s1", timeout_s=60) == ["on-node-a"]  # its pid is ours to check
    with store.transaction() as db:
        assert store.reap_stale(db, "s1", timeout_s=0) == ["on-node-b"]  # elsewhere: only the heartbeat counts
    assert {r["id"]: r["host"] for r in store.runs("s1")} == {"on-node-a": "node-a", "on-node-b": "node-b"}


def test_an_interrupted_run_is_run_again_before_an_older_crashed_one(store_url: str) -> None:
    """README: an interrupted run is run again first (it spends no retry), before crashed runs with retries left,
    whatever their age: an older run ends crashed, a newer one interrupted; the next claim continues the
    interrupted one, the claim after it retries the crashed one, then the grid goes on."""
    backend = LocalBackend(LocalStore(store_url))
    sweep_id = backend.create(validate_sweep(GRID))
    older, _ = backend.claim(sweep_id)
    newer, _ = backend.claim(sweep_id)
    backend.store.end_run(older["id"], "crashed", error="process killed by SIGKILL")
    backend.store.end_run(newer["id"], "interrupted", {"val/accuracy": 0.5, "epochs_completed": 1})
    first, _ = backend.claim(sweep_id)
    assert (first["retry_of"], first["config"]) == (newer["id"], newer["config"]), first
    second, _ = backend.claim(sweep_id)
    assert (second["retry_of"], second["config"], second["attempt"]) == (older["id"], older["config"], 1), second
    fresh, _ = backend.claim(sweep_id)
    assert fresh.get("retry_of") is None and fresh["config"] not in (older["config"], newer["config"])


ROUNDS = 2  # six agents claim at once, twice: 6 + 6 claims for a run_cap of 7


def _claim_in_rounds(url: str, sweep_id: str, host: str, barrier: Any, out: Any, flock_fails: bool) -> None:
    """One agent: opens the store, then in each round waits with the others at the barrier and claims once (ending
    what it got as finished). ``flock_fails``: a file system without flock (NFS without its lock manager):
    ``fcntl.flock`` raises ENOLCK in this process, as the kernel would there. Puts (claimed ids, flock calls)."""
    import errno
    import fcntl

    os.environ["IGNITE_SWEEP_HOST"] = host
    flock_calls = [0]
    if flock_fails:

        def no_flock(fd: int, operation: int) -> None:
            flock_calls[0] += 1
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

        fcntl.flock = no_flock
    try:
        backend = LocalBackend(LocalStore(url))
        assert backend.sweep(sweep_id) is not None  # connected before the start: the claims race, not the opens
        claimed = []
        for _ in range(ROUNDS):
            barrier.wait(timeout=60)
            run, _ = backend.claim(sweep_id)
            if run is not None:
                claimed.append(run["id"])
                backend.store.end_run(run["id"], "finished", {"val/accuracy": 0.5})
        out.put((claimed, flock_calls[0]))
    except BaseException as exc:  # noqa: BLE001 - the test says what failed; the others stop waiting
        barrier.abort()
        out.put((f"{host}: {type(exc).__name__}: {exc}", flock_calls[0]))


def _six_agents_claim_at_once(url: str, flock_fails: bool = False) -> tuple[LocalBackend, str, list[str], int]:
    """Six agent processes, all released by one barrier for each round of claims: every claim of a round is in
    flight at once, so a claim that is not one writer at a time gives a point twice or passes run_cap every time,
    not once in a few runs."""
    backend = LocalBackend(LocalStore(url))
    sweep_id = backend.create(validate_sweep({**GRID, "run_cap": 7}))
    ctx = multiprocessing.get_context("fork")
    out, barrier = ctx.Queue(), ctx.Barrier(6)
    agents = [ctx.Process(target=_claim_in_rounds, args=(url, sweep_id, f"node-{i}", barrier, out, flock_fails))
              for i in range(6)]  # fmt: skip
    for p in agents:
        p.start()
    results = [out.get(timeout=120) for _ in agents]
    for p in agents:
        p.join(timeout=30)
    errors = [claimed for claimed, _ in results if isinstance(claimed, str)]
    assert not errors, errors
    claimed = [run for runs, _ in results for run in runs]
    return backend, sweep_id, claimed, sum(calls for _, calls in results)


def _assert_exactly_once(backend: LocalBackend, sweep_id: str, claimed: list[str]) -> None:
    runs = backend.runs(sweep_id)
    assert len(claimed) == len(set(claimed)) == len(runs) == 7, (claimed, runs)  # run_cap exact, none twice
    assert len({r.config["lr"] for r in runs}) == 7  # seven different grid points
    assert {r.state for r in runs} == {"finished"}
    assert backend.claim(sweep_id) == (None, "run_cap 7 reached")


def test_claims_are_exactly_once_and_run_cap_exact_under_six_concurrent_agents(store_url: str) -> None:
    backend, sweep_id, claimed, _ = _six_agents_claim_at_once(store_url)
    _assert_exactly_once(backend, sweep_id, claimed)


def test_sqlite_alone_keeps_claims_exactly_once_on_a_file_system_without_flock(tmp_path: Path) -> None:
    """README: the lock file only orders SQLite's writers; on a file system without flock, ``BEGIN IMMEDIATE``
    alone keeps claims exactly-once. Every flock in the six agents fails with ENOLCK."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    backend, sweep_id, claimed, flock_calls = _six_agents_claim_at_once(url, flock_fails=True)
    assert flock_calls >= 6 * ROUNDS  # the agents' writes did try the lock file, and went on without it
    _assert_exactly_once(backend, sweep_id, claimed)


def test_three_hosts_finish_a_12_point_grid_exactly_once_with_a_run_killed(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three agents acting as three nodes on one PostgreSQL store; one run's process is killed -9: it is
    crashed, its grid point runs again, and every point ends finished exactly once."""
    monkeypatch.setenv("IGNITE_SWEEP_STORE", postgres_url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work.py").write_text("import sys, time\ntime.sleep(0.6)\n")
    body = {"program": "work.py", "method": "grid", "parameters": {"x": {"values": list(range(12))}}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(body))
    sweep_id = create(tmp_path / "grid.yaml")
    agents = [
        subprocess.Popen([sys.executable, "-m", "ignite_sweep", "agent", sweep_id], text=True,
                         env={**os.environ, "IGNITE_SWEEP_HOST": f"node-{i}"}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
        for i in range(3)
    ]  # fmt: skip
    victim = wait_for(lambda: next((r for r in store_runs(sweep_id) if r["state"] == "running" and r["pid"]), None),
                      what="a running run")  # fmt: skip
    os.kill(victim["pid"], signal.SIGKILL)
    for agent in agents:
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err
    runs = store_runs(sweep_id)
    finished = sorted(r["config"]["x"] for r in runs if r["state"] == "finished")
    assert finished == list(range(12)), [(r["config"], r["state"], r["error"]) for r in runs]
    (crashed,) = [r for r in runs if r["state"] == "crashed"]
    assert crashed["id"] == victim["id"] and any(r["retry_of"] == crashed["id"] for r in runs)
    assert {r["host"] for r in runs} == {"node-0", "node-1", "node-2"}


OLD_SCHEMA = """
CREATE TABLE sweeps (id TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL, project TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT, retries INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE runs (id TEXT PRIMARY KEY, sweep_id TEXT NOT NULL REFERENCES sweeps(id), seq INTEGER NOT NULL,
    state TEXT NOT NULL, config TEXT NOT NULL, summary TEXT, error TEXT, attempt INTEGER NOT NULL DEFAULT 0,
    retry_of TEXT, search_info TEXT, pid INTEGER, host TEXT, slot TEXT, gpu TEXT, run_dir TEXT,
    should_stop INTEGER NOT NULL DEFAULT 0, heartbeat_at REAL, started_at REAL NOT NULL, ended_at REAL);
CREATE INDEX runs_by_sweep ON runs (sweep_id, seq);
CREATE TABLE history (run_id TEXT NOT NULL REFERENCES runs(id), idx INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, idx));
"""


def test_a_store_made_by_an_older_version_keeps_working(tmp_path: Path) -> None:
    """The sqlite3 store of ignite-sweep 0.1 (no meta table): opened, migrated to the current schema version,
    its sweeps and runs read as before and new runs go on."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO sweeps VALUES ('old1', 'old', ?, 'p', 'running', NULL, 2, 1.0)",
                     ('{"method": "grid", "parameters": {"lr": {"values": [0.1, 0.2]}}}',))  # fmt: skip
        conn.execute("INSERT INTO runs (id, sweep_id, seq, state, config, started_at, summary) "
                     "VALUES ('r1', 'old1', 1, 'finished', ?, 1.0, ?)", ('{"lr": 0.1}', '{"val/accuracy": 0.9}'))
    store = LocalStore(path)
    assert store.sweep("old1")["name"] == "old" and store.run("r1")["summary"] == {"val/accuracy": 0.9}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    run, _ = LocalBackend(store).claim("local/old1")
    assert run is not None and run["config"] == {"lr": 0.2}  # the engine saw the old run: the next grid point


def test_a_version_2_store_is_migrated_and_what_the_scheduler_reads_is_filled_in(tmp_path: Path) -> None:
    """Schema 2 (resumed_epoch, no wandb_id, nothing kept for the scheduler): migrated when opened; its runs
    log to W&B runs of their own id, and their scores, hyperband rungs and grid keys come from their history, so
    that the next claim and report decide as the engine does on the whole sweep."""
    path = tmp_path / "v2.db"
    config = {"method": "grid", "metric": {"name": "loss", "goal": "minimize"}, "parameters": {
        "lr": {"values": [0.1, 0.2, 0.3]}}, "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3}}
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("ALTER TABLE runs ADD COLUMN resumed_epoch INTEGER")
        conn.execute("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        conn.execute("INSERT INTO sweeps VALUES ('s2', 'two', ?, 'p', 'running', NULL, 2, 1.0)", (json.dumps(config),))
        for seq, (run, lr, state, losses) in enumerate([("r1", 0.1, "finished", [3.0, 2.0, 1.0]),
                                                         ("r2", 0.2, "running", [4.0, 5.0])], 1):  # fmt: skip
            conn.execute("INSERT INTO runs (id, sweep_id, seq, state, config, started_at, heartbeat_at, summary) "
                         "VALUES (?, 's2', ?, ?, ?, ?, ?, ?)", (run, seq, state, json.dumps({"lr": lr}), time.time(),
                         time.time(), json.dumps({"loss": losses[-1]}) if state == "finished" else None))  # fmt: skip
            for idx, loss in enumerate(losses):
                conn.execute("INSERT INTO history VALUES (?, ?, ?)", (run, idx, json.dumps({"loss": loss})))
    store = LocalStore(path)
    assert store.run("r2")["wandb_id"] == "r2" and store.wandb_sweep("s2", "me", "p") is None  # 5: the new table
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert sorted(conn.execute("SELECT run_id, band, value FROM rungs")) == [
            ("r1", 1, 3.0), ("r1", 3, 1.0), ("r2", 1, 4.0)]  # bands 1, 3, 9, ...
        assert sorted(conn.execute("SELECT id, metric_n, metric_best, summary_score FROM runs")) == [
            ("r1", 3, 1.0, 1.0), ("r2", 2, 4.0, None)]
    backend = LocalBackend(store)
    assert backend.report("r2", {"loss": 6.0}) is True  # band 3: its best 4.0 > sorted([1.0, 6.0])[int(2 / 3)]
    run, _ = backend.claim("local/s2")
    assert run is not None and run["config"] == {"lr": 0.3}  # the grid points of r1 and r2 are taken


def test_a_store_from_a_newer_version_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    LocalStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(BackendError, match="schema version 99 is newer"):
        LocalStore(path)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://u@h/db", "unknown kind of URL; allowed: a path, sqlite:///path or postgresql://"),
        ("postgresql://postgres:secret@127.0.0.1:1/nodb", "sweep store 'postgresql://postgres@127.0.0.1:1/nodb':"),
    ],
)
def test_a_bad_store_is_one_line_naming_it_without_its_password(tmp_path: Path, url: str, needle: str) -> None:
    started = time.monotonic()
    result = cli("ls", "--store", url, timeout=60)
    assert result.returncode == 1 and needle in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and "secret" not in result.stderr
    assert time.monotonic() - started < 30


def test_a_missing_database_is_one_line(postgres_server: str) -> None:
    url = postgres_server.rsplit("/", 1)[0] + "/no_such_db"
    result = cli("ls", "--store", url, timeout=60)
    assert result.returncode == 1 and 'database "no_such_db" does not exist' in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_the_cli_runs_a_sweep_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """create, agent, status and ls through --store, as the README's cluster recipe does."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**GRID, "parameters": {"dataset": {"value": "digits"}, "epochs": {"value": 1},
                                                           "lr": {"values": [0.02, 0.05]}}}))  # fmt: skip
    created = cli("create", str(path), "--backend", "local", "--store", postgres_url)
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip().splitlines()[-1]
    assert cli("agent", sweep_id, "--store", postgres_url).returncode == 0
    listed = cli("ls", "--store", postgres_url)
    assert sweep_id in listed.stdout and "2 runs" in listed.stdout
    assert "local" not in cli("ls").stdout  # the default SQLite store knows nothing of it
