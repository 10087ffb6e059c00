"""The local backend's SQLite store: sweeps, runs and per-evaluation history.

WAL mode, one connection per process (never shared across fork). Every write that must be atomic across
parallel agents runs inside ``transaction()`` (``BEGIN IMMEDIATE``: one writer at a time, readers go on).
This module stores and fetches; deciding what to run is local.py's job.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ignite_sweep.backends.base import RUN_STATES
from ignite_sweep.errors import BackendError

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,            -- 8 chars; the public id is 'local/<id>'
    name TEXT NOT NULL,
    config TEXT NOT NULL,           -- the validated W&B sweep config, JSON
    project TEXT NOT NULL,
    state TEXT NOT NULL,            -- running | paused | stopped | canceled | finished
    reason TEXT,                    -- why it is stopped/finished
    retries INTEGER NOT NULL,       -- how often a crashed run's config is offered again
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,            -- also the wandb run id
    sweep_id TEXT NOT NULL REFERENCES sweeps(id),
    seq INTEGER NOT NULL,           -- order of creation within the sweep
    state TEXT NOT NULL,            -- running | finished | stopped | failed | crashed | interrupted
    config TEXT NOT NULL,           -- flat params, JSON
    summary TEXT,                   -- JSON
    error TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    retry_of TEXT,
    search_info TEXT,
    pid INTEGER,
    host TEXT,
    slot TEXT,
    gpu TEXT,
    run_dir TEXT,
    should_stop INTEGER NOT NULL DEFAULT 0,
    heartbeat_at REAL,
    started_at REAL NOT NULL,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs (sweep_id, seq);
CREATE TABLE IF NOT EXISTS history (
    run_id TEXT NOT NULL REFERENCES runs(id),
    idx INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
"""

TERMINAL = tuple(s for s in RUN_STATES if s != "running")


def store_path() -> Path:
    return Path(os.environ.get("IGNITE_SWEEP_DIR", ".ignite-sweep")).expanduser() / "sweeps.db"


class LocalStore:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise BackendError(f"sweep store {self.path}: {exc}") from None
        # Closed at exit even though the CLI skips interpreter teardown: the last connection to close
        # folds the WAL back into sweeps.db, so the file alone is complete when copied.
        self._closer = weakref.finalize(self, self.conn.close)

    def close(self) -> None:
        self._closer()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------ sweeps

    def add_sweep(self, sweep_id: str, name: str, config: dict, project: str, retries: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sweeps (id, name, config, project, state, retries, created_at) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?)",
                (sweep_id, name, json.dumps(config), project, retries, time.time()),
            )

    def sweep(self, sweep_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        return _sweep(row) if row else None

    def sweeps(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT s.*, (SELECT COUNT(*) FROM runs r WHERE r.sweep_id = s.id) AS n_runs "
            "FROM sweeps s ORDER BY created_at"
        ).fetchall()
        return [{**_sweep(r), "n_runs": r["n_runs"]} for r in rows]

    def set_sweep_state(self, db: sqlite3.Connection, sweep_id: str, state: str, reason: str) -> None:
        db.execute("UPDATE sweeps SET state = ?, reason = ? WHERE id = ?", (state, reason, sweep_id))

    # ------------------------------------------------------------ runs

    def runs(self, sweep_id: str, with_history: bool = False) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM runs WHERE sweep_id = ? ORDER BY seq", (sweep_id,)).fetchall()
        runs = [_run(r) for r in rows]
        if with_history:
            history: dict[str, list[dict]] = {r["id"]: [] for r in runs}
            for h in self.conn.execute(
                "SELECT h.run_id, h.metrics FROM history h JOIN runs r ON r.id = h.run_id "
                "WHERE r.sweep_id = ? ORDER BY h.run_id, h.idx",
                (sweep_id,),
            ):
                history[h["run_id"]].append(json.loads(h["metrics"]))
            for run in runs:
                run["history"] = history[run["id"]]
        return runs

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def insert_run(self, db: sqlite3.Connection, run: dict[str, Any]) -> None:
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs WHERE sweep_id = ?", (run["sweep_id"],))
        now = time.time()
        db.execute(
            "INSERT INTO runs (id, sweep_id, seq, state, config, attempt, retry_of, search_info, pid, host, "
            "slot, gpu, heartbeat_at, started_at) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run["id"], run["sweep_id"], seq.fetchone()[0], json.dumps(run["config"]), run.get("attempt", 0),
                run.get("retry_of"), json.dumps(run.get("search_info")), run.get("pid"), socket.gethostname(),
                run.get("slot"), run.get("gpu"), now, now,
            ),
        )  # fmt: skip

    def set_pid(self, run_id: str, pid: int) -> None:
        self.conn.execute("UPDATE runs SET pid = ?, heartbeat_at = ? WHERE id = ?", (pid, time.time(), run_id))

    def heartbeat(self, run_id: str, run_dir: str | None = None) -> None:
        self.conn.execute(
            "UPDATE runs SET heartbeat_at = ?, run_dir = COALESCE(?, run_dir) WHERE id = ? AND state = 'running'",
            (time.time(), run_dir, run_id),
        )

    def append_history(self, db: sqlite3.Connection, run_id: str, metrics: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO history (run_id, idx, metrics) VALUES (?, (SELECT COUNT(*) FROM history WHERE run_id = ?), ?)",
            (run_id, run_id, json.dumps(metrics)),
        )
        db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (time.time(), run_id))

    def request_stop(self, db: sqlite3.Connection, run_ids: list[str]) -> None:
        db.executemany("UPDATE runs SET should_stop = 1 WHERE id = ? AND state = 'running'", [(i,) for i in run_ids])

    def end_run(self, run_id: str, state: str, summary: dict | None = None, error: str | None = None) -> bool:
        """Record a run's end, once: a run already ended (e.g. reaped as crashed) keeps its state."""
        assert state in TERMINAL, state
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE runs SET state = ?, summary = COALESCE(?, summary), error = ?, ended_at = ? "
                "WHERE id = ? AND state = 'running'",
                (state, json.dumps(summary) if summary is not None else None, error, time.time(), run_id),
            )
            return cur.rowcount == 1

    def reap_stale(self, db: sqlite3.Connection, sweep_id: str, timeout_s: float) -> list[str]:
        """Mark as crashed the running runs whose heartbeat is older than timeout_s, and those on this
        host whose process is gone (no need to wait for the timeout there)."""
        now, host = time.time(), socket.gethostname()
        reaped = []
        for r in db.execute("SELECT id, pid, host, heartbeat_at FROM runs WHERE sweep_id = ? AND state = 'running'",
                            (sweep_id,)).fetchall():  # fmt: skip
            if r["heartbeat_at"] < now - timeout_s:
                error = f"no heartbeat for {timeout_s:.0f}s: its process died"
            elif r["host"] == host and r["pid"] and not _alive(r["pid"]):
                error = f"its process {r['pid']} is gone"
            else:
                continue
            db.execute("UPDATE runs SET state = 'crashed', error = ?, ended_at = ? WHERE id = ?", (error, now, r["id"]))
            reaped.append(r["id"])
        return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if os.path.exists(f"/proc/{pid}/stat"):  # a zombie (exited, not yet reaped by its agent) is gone too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    return True


def _sweep(row: sqlite3.Row) -> dict[str, Any]:
    return {**dict(row), "config": json.loads(row["config"])}


def _run(row: sqlite3.Row) -> dict[str, Any]:
    run = dict(row)
    run["config"] = json.loads(row["config"])
    run["summary"] = json.loads(row["summary"]) if row["summary"] else {}
    run["search_info"] = json.loads(row["search_info"]) if row["search_info"] else None
    return run
