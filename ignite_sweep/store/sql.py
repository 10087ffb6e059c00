"""The local backend's store: sweeps, runs and per-evaluation history, in SQLite or PostgreSQL.

One implementation over SQLAlchemy Core: the tables below and one set of plain SQL serve both databases. The
store is chosen by a URL (``IGNITE_SWEEP_STORE`` or ``--store``): a path or ``sqlite:///path`` (the default,
``$IGNITE_SWEEP_DIR/sweeps.db``), or ``postgresql://user:password@host:port/db`` (agents on many machines;
needs ``pip install 'ignite-sweep[postgres]'``, the psycopg 3 driver).

Every write that must be atomic across parallel agents runs inside ``transaction()``: one writer at a time,
readers go on. SQLite: ``BEGIN IMMEDIATE`` (WAL mode). PostgreSQL: a transaction-scoped advisory lock taken
first, the same one-writer rule across machines. Connections are never shared across fork: a forked child opens
its own store (and the pool a child inherits is dropped without closing the parent's connections).
This module stores and fetches; deciding what to run is the local backend's job.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ignite_sweep.errors import BackendError, IgniteSweepError
from ignite_sweep.states import RESULT_STATES, RUN_STATES

T = TypeVar("T")
AWAY = ("connection", "server closed", "terminating", "starting up", "shutting down", "timeout", "timed out",
        "could not receive", "could not send", "network", "ssl syscall", "eof detected")  # the server, not the SQL
NOT_AWAY = ("authentication", "does not exist", "pg_hba.conf", "permission denied", "invalid")  # a wrong URL
STORE_WAIT_S = 60.0  # how long agents and runs wait for a PostgreSQL store that is away (IGNITE_SWEEP_STORE_WAIT_S)

SCHEMA_VERSION = 5
"""1: sweeps, runs, history and the meta table (stores created before the meta table are version 0: same tables).
2: runs.resumed_epoch (the epoch a retried run resumed after, from its predecessor's checkpoint).
3: runs.wandb_id (the W&B run it logs to: its own id, or the run it resumed's W&B run; null means its own id).
4: what the scheduler needs, kept up to date as runs report (so that a claim or report reads a few rows, not the
   sweep): runs.metric_n / metric_best (valid sweep-metric values so far, the best as the engine compares),
   runs.summary_score (a result's summary metric), runs.grid_key + sweeps.grid_next (grid points taken), the
   rungs table (each run's metric at each hyperband band), and the indexes these are read through.
5: the wandb_sweeps table: the W&B sweep that ``ignite-sweep sync`` registered for a local sweep, per entity/project
   (a new table: created when an older store is opened)."""
ADVISORY_LOCK = 0x1A17E5EE  # PostgreSQL: the store's one write lock
TERMINAL = tuple(s for s in RUN_STATES if s != "running")


def store_path() -> Path:
    return Path(os.environ.get("IGNITE_SWEEP_DIR", ".ignite-sweep")).expanduser() / "sweeps.db"


def store_url(where: str | os.PathLike[str] | None = None) -> str:
    """What ``LocalStore`` opens: ``where``, else ``IGNITE_SWEEP_STORE``, else the SQLite file in
    ``IGNITE_SWEEP_DIR``. A plain path means a SQLite file."""
    where = where if where is not None else os.environ.get("IGNITE_SWEEP_STORE") or store_path()
    text = str(where)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def host_name() -> str:
    """This machine, as runs record it (``IGNITE_SWEEP_HOST`` overrides: tests act as several nodes)."""
    return os.environ.get("IGNITE_SWEEP_HOST") or socket.gethostname()


def _tables() -> Any:
    from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

    meta = MetaData()
    Table("meta", meta, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))
    Table(
        "sweeps", meta,
        Column("id", String(64), primary_key=True),  # 8 chars; the public id is 'local/<id>'
        Column("name", Text, nullable=False),
        Column("config", Text, nullable=False),  # the validated W&B sweep config, JSON
        Column("project", Text, nullable=False),
        Column("state", String(16), nullable=False),  # running | paused | stopped | canceled | finished
        Column("reason", Text),  # why it is stopped/finished
        Column("retries", Integer, nullable=False),  # how often a crashed run's config is offered again
        Column("created_at", Float, nullable=False),
        Column("grid_next", Integer, nullable=False, server_default="0"),  # grid: every point before it is taken
    )  # fmt: skip
    runs = Table(
        "runs", meta,
        Column("id", String(64), primary_key=True),  # also its wandb run id unless wandb_id says otherwise
        Column("sweep_id", String(64), nullable=False),
        Column("seq", Integer, nullable=False),  # order of creation within the sweep
        Column("state", String(16), nullable=False),  # running | finished | stopped | failed | crashed | interrupted
        Column("config", Text, nullable=False),  # flat params, JSON
        Column("summary", Text),  # JSON
        Column("error", Text),
        Column("attempt", Integer, nullable=False, server_default="0"),
        Column("retry_of", String(64)),
        Column("search_info", Text),
        Column("pid", Integer),
        Column("host", Text),
        Column("slot", Text),
        Column("gpu", Text),
        Column("run_dir", Text),
        Column("should_stop", Integer, nullable=False, server_default="0"),
        Column("heartbeat_at", Float),
        Column("started_at", Float, nullable=False),
        Column("ended_at", Float),
        Column("resumed_epoch", Integer),
        Column("wandb_id", String(64)),
        # what the scheduler reads (engine.Scoring: lower is better), kept up to date by append_history/end_run
        Column("metric_n", Integer, nullable=False, server_default="0"),  # valid sweep-metric values in history
        Column("metric_best", Float),  # the best of them
        Column("summary_score", Float),  # a result's summary metric (metric.target)
        Column("grid_key", Text),  # grid sweeps: the engine's dedupe key of its point
    )  # fmt: skip
    Index("runs_by_sweep", runs.c.sweep_id, runs.c.seq)
    Index("runs_by_state", runs.c.sweep_id, runs.c.state)
    Index("runs_by_retry_of", runs.c.retry_of)
    Index("runs_by_grid_key", runs.c.sweep_id, runs.c.grid_key)
    Index("runs_by_summary_score", runs.c.sweep_id, runs.c.summary_score)
    rungs = Table(
        "rungs", meta,  # hyperband: a run's metric (as scored) at its n-th valid value, for each band n
        Column("run_id", String(64), primary_key=True),
        Column("band", Integer, primary_key=True),
        Column("sweep_id", String(64), nullable=False),
        Column("value", Float, nullable=False),
    )  # fmt: skip
    Index("rungs_by_band", rungs.c.sweep_id, rungs.c.band, rungs.c.value)
    Table(
        "wandb_sweeps", meta,  # `ignite-sweep sync`: the W&B sweep a local sweep's runs were uploaded into
        Column("sweep_id", String(64), primary_key=True),
        Column("entity", String(255), primary_key=True),
        Column("project", String(255), primary_key=True),
        Column("wandb_sweep", String(64), nullable=False),  # the W&B sweep's name (its id)
    )  # fmt: skip
    Table(
        "history", meta,
        Column("run_id", String(64), primary_key=True),
        Column("idx", Integer, primary_key=True),
        Column("metrics", Text, nullable=False),
    )  # fmt: skip
    return meta


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        auth, host = rest.rsplit("@", 1)
        return f"{scheme}://{auth.split(':', 1)[0]}@{host}"
    return url


class LocalStore:
    def __init__(self, where: str | os.PathLike[str] | None = None, wait_on_open: bool = False):
        """``wait_on_open``: a PostgreSQL server that is away is waited for already at the first connection (a run's
        process opening the store its agent had; a command's own first contact fails in one line at once)."""
        self.url = store_url(where)
        self._wait_on_open = wait_on_open
        self.dialect = self.url.split(":", 1)[0].split("+", 1)[0]
        self.path: Path | str = Path(self.url.removeprefix("sqlite:///")) if self.dialect == "sqlite" else self.url
        self._local = threading.local()
        self._scorings: dict[str, Any] = {}  # sweep id -> engine.Scoring (a sweep's config never changes)
        self._queue_fd: list[int] = [-1, -1]  # [pid, fd of <store>.lock]: SQLite writers queue on it
        weakref.finalize(self, _close_queue, self._queue_fd)
        self.wait_s = float(os.environ.get("IGNITE_SWEEP_STORE_WAIT_S", STORE_WAIT_S))
        self.engine = self._connect()
        self._closer = weakref.finalize(self, self.engine.dispose)

    def __str__(self) -> str:
        return str(self.path) if self.dialect == "sqlite" else _safe(self.url)

    # ------------------------------------------------------------ connecting

    def _connect(self) -> Any:
        if self.dialect not in ("sqlite", "postgresql", "postgres"):
            raise BackendError(f"sweep store '{_safe(self.url)}': unknown kind of URL; allowed: a path, "
                               "sqlite:///path or postgresql://user:password@host:port/db")  # fmt: skip
        try:
            import sqlalchemy
        except ImportError:  # pragma: no cover - a dependency
            raise BackendError("sweep store: SQLAlchemy is not installed (pip install 'sqlalchemy>=2')") from None
        from sqlalchemy import event

        if self.dialect == "sqlite":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(f"sweep store {self.path}: {exc.strerror}") from None
            engine = sqlalchemy.create_engine(self.url, connect_args={"timeout": 60})

            @event.listens_for(engine, "connect")
            def _sqlite_connect(dbapi: Any, _record: Any) -> None:
                dbapi.isolation_level = None  # SQLAlchemy issues BEGIN itself (below), not the driver
                dbapi.execute("PRAGMA journal_mode=WAL")
                dbapi.execute("PRAGMA synchronous=NORMAL")

            @event.listens_for(engine, "begin")
            def _sqlite_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("write", False) else "BEGIN")
        else:
            url = self.url.replace("postgres://", "postgresql://", 1)
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            try:
                engine = sqlalchemy.create_engine(url, pool_pre_ping=True, pool_size=1, max_overflow=2,
                                                  connect_args={"connect_timeout": 10})  # fmt: skip
            except ImportError:
                raise BackendError(f"sweep store '{_safe(self.url)}': the PostgreSQL driver is not installed; "
                                   "pip install 'ignite-sweep[postgres]'") from None  # fmt: skip
            except sqlalchemy.exc.ArgumentError as exc:
                raise BackendError(f"sweep store '{_safe(self.url)}': {exc}") from None
        if hasattr(os, "register_at_fork"):  # a forked child opens its own store; never use the parent's sockets
            os.register_at_fork(after_in_child=lambda ref=weakref.ref(engine): (e := ref()) and e.dispose(close=False))
        def open_and_migrate() -> None:
            with engine.connect() as conn:
                conn.info["write"] = True
                with conn.begin():
                    self._lock(conn)
                    self._migrate(conn)

        try:
            self.retrying(open_and_migrate) if self._wait_on_open else open_and_migrate()
        except IgniteSweepError:  # away past the wait
            engine.dispose()
            raise
        except sqlalchemy.exc.SQLAlchemyError as exc:
            engine.dispose()
            if self.dialect == "sqlite":
                from ignite_sweep import faults

                fault = faults.classify(exc, [Path(self.path).parent], str(self))  # a full or read-only disk
                raise fault or BackendError(f"sweep store {self}: {_first_line(exc)}") from None
            raise BackendError(f"sweep store '{_safe(self.url)}': {_first_line(exc)} (is the server up, and are the "
                               "URL's user, password and database right?)") from None  # fmt: skip
        return engine

    def _lock(self, conn: Any) -> None:
        if self.dialect != "sqlite":
            from sqlalchemy import text

            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})

    def _migrate(self, conn: Any) -> None:
        """Create the tables on first use; bring an older store up to ``SCHEMA_VERSION``."""
        from sqlalchemy import inspect as sqlalchemy_inspect
        from sqlalchemy import text

        version_sql = text("SELECT value FROM meta WHERE key = 'schema_version'")
        if sqlalchemy_inspect(conn).has_table("meta"):  # every run's process opens the store: one query if current
            row = conn.execute(version_sql).fetchone()
            if row and int(row[0]) == SCHEMA_VERSION:
                return
        _tables().create_all(conn, checkfirst=True)
        row = conn.execute(version_sql).fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise BackendError(f"sweep store {self}: schema version {version} is newer than this ignite-sweep's "
                               f"({SCHEMA_VERSION}); upgrade ignite-sweep")  # fmt: skip
        columns = {c["name"] for c in sqlalchemy_inspect(conn).get_columns("runs")}
        if "resumed_epoch" not in columns:  # 1 -> 2 (a table made before it existed)
            conn.execute(text("ALTER TABLE runs ADD COLUMN resumed_epoch INTEGER"))
        if "wandb_id" not in columns:  # 2 -> 3
            conn.execute(text("ALTER TABLE runs ADD COLUMN wandb_id VARCHAR(64)"))
        if "metric_n" not in columns:  # 3 -> 4: the columns, their indexes, then the values for runs already there
            real = "REAL" if self.dialect == "sqlite" else "DOUBLE PRECISION"
            for ddl in ("metric_n INTEGER NOT NULL DEFAULT 0", f"metric_best {real}", f"summary_score {real}",
                        "grid_key TEXT"):  # fmt: skip
                conn.execute(text(f"ALTER TABLE runs ADD COLUMN {ddl}"))
            conn.execute(text("ALTER TABLE sweeps ADD COLUMN grid_next INTEGER NOT NULL DEFAULT 0"))
            for index in _tables().tables["runs"].indexes:
                index.create(conn, checkfirst=True)
            self._backfill(conn)
        if version < SCHEMA_VERSION:
            conn.execute(text("DELETE FROM meta WHERE key = 'schema_version'"))
            conn.execute(text("INSERT INTO meta (key, value) VALUES ('schema_version', :v)"),
                         {"v": str(SCHEMA_VERSION)})  # fmt: skip

    def _backfill(self, conn: Any) -> None:
        """Schema 4 for the runs of an older store: their scores, rungs and grid keys, from their history."""
        from ignite_sweep.engine import GridPlan

        for sweep in self._exec(conn, "SELECT id, config FROM sweeps").fetchall():
            config = json.loads(sweep.config)
            try:
                plan = GridPlan(config) if config.get("method") == "grid" else None
            except Exception:  # noqa: BLE001 - a grid the engine refuses: its claims say so, not the store's open
                plan = None
            for run in self._exec(conn, "SELECT id, state, config, summary FROM runs WHERE sweep_id = :s",
                                  {"s": sweep.id}).fetchall():  # fmt: skip
                rows = self._exec(conn, "SELECT metrics FROM history WHERE run_id = :r ORDER BY idx", {"r": run.id})
                for row in rows.fetchall():
                    self._score_evaluation(conn, run.id, json.loads(row.metrics))
                self._score_summary(conn, run.id, run.state, json.loads(run.summary) if run.summary else None)
                if plan is not None:
                    self._exec(conn, "UPDATE runs SET grid_key = :k WHERE id = :r",
                               {"k": plan.run_key(json.loads(run.config)), "r": run.id})  # fmt: skip

    def close(self) -> None:
        self._closer()
        _close_queue(self._queue_fd)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One writer at a time, across processes (and machines, on PostgreSQL). Reads in the same thread
        while it is open go through it, so they see its own writes."""
        outer = getattr(self._local, "conn", None)
        if outer is not None:  # nested: the open transaction already holds the lock
            yield outer
            return
        with self._queue(), self.engine.connect() as conn:
            conn.info["write"] = True
            with conn.begin():
                self._lock(conn)
                self._local.conn = conn
                try:
                    yield conn
                finally:
                    self._local.conn = None

    @contextmanager
    def _queue(self) -> Iterator[None]:
        """SQLite: writers of this machine wait for the lock in the kernel (``flock`` on ``<store>.lock``) and wake
        when it is free. SQLite's own busy handler polls with sleeps of up to 100 ms: with 8 agents on one store,
        waits of a quarter of a second for a lock held a few ms. The file lock only orders; ``BEGIN IMMEDIATE``
        still decides (a file system without flock: SQLite alone)."""
        if self.dialect != "sqlite":
            yield
            return
        if self._queue_fd[0] != os.getpid():  # a forked child opens its own (the parent's is the parent's lock)
            try:
                self._queue_fd[:] = [os.getpid(), os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)]
            except OSError:
                self._queue_fd[:] = [os.getpid(), -1]
        fd = self._queue_fd[1]
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            fd = -1
        try:
            yield
        finally:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _read(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        from sqlalchemy import text

        current = getattr(self._local, "conn", None)
        if current is not None:
            return [dict(r._mapping) for r in current.execute(text(sql), params)]

        def read() -> list[dict[str, Any]]:
            with self.engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(text(sql), params)]

        return self.retrying(read)

    def _write(self, sql: str, **params: Any) -> int:
        from sqlalchemy import text

        def write() -> int:
            with self.transaction() as db:
                return db.execute(text(sql), params).rowcount

        return self.retrying(write)

    # ------------------------------------------------------------ a PostgreSQL server that is away for a while

    def away(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the PostgreSQL server cannot be reached (refused, reset, restarting, timed out):
        wait for it. SQLite's file is never away (its faults are the machine's: faults.py)."""
        if self.dialect == "sqlite":
            return False
        import sqlalchemy

        if getattr(exc, "connection_invalidated", False):
            return True
        text = str(exc).lower()
        return (isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
                and any(words in text for words in AWAY) and not any(words in text for words in NOT_AWAY))  # fmt: skip

    def retrying(self, work: Callable[[], T], wait_s: float | None = None) -> T:
        """``work`` (a whole transaction, or a read), done again while the server is away, with backoff, for at
        most ``wait_s`` (default ``IGNITE_SWEEP_STORE_WAIT_S``, 60 s): one line when the wait starts and one when
        the server is back; after it, ``StoreAway`` (one line naming the store, no password). Inside an open
        transaction it only runs ``work``: the transaction's own caller does it again whole."""
        if self.dialect == "sqlite" or getattr(self._local, "conn", None) is not None:
            return work()
        from ignite_sweep.faults import StoreAway

        limit = self.wait_s if wait_s is None else wait_s
        deadline, delay = None, 0.25
        while True:
            try:
                result = work()
            except Exception as exc:
                if not self.away(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + limit
                    if limit > 0:
                        _say(f"sweep store {self} is away ({_first_line(exc)}): waiting up to {limit:g} s for it "
                             "(IGNITE_SWEEP_STORE_WAIT_S)")  # fmt: skip
                if now + delay > deadline:
                    waited = f"unreachable for {limit:g} s" if limit > 0 else "away"
                    raise StoreAway(str(self), f"{waited} ({_first_line(exc)})") from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if deadline is not None and limit > 0:
                _say(f"sweep store {self} is back")
            return result

    @staticmethod
    def _exec(db: Any, sql: str, params: Any = None) -> Any:
        from sqlalchemy import text

        return db.execute(text(sql), params or {})

    # ------------------------------------------------------------ sweeps

    def add_sweep(self, sweep_id: str, name: str, config: dict, project: str, retries: int) -> None:
        self._write(
            "INSERT INTO sweeps (id, name, config, project, state, retries, created_at) "
            "VALUES (:id, :name, :config, :project, 'running', :retries, :now)",
            id=sweep_id, name=name, config=json.dumps(config), project=project, retries=retries, now=time.time(),
        )  # fmt: skip

    def sweep(self, sweep_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM sweeps WHERE id = :id", id=sweep_id)
        return _sweep(rows[0]) if rows else None

    def sweeps(self) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT s.*, (SELECT COUNT(*) FROM runs r WHERE r.sweep_id = s.id) AS n_runs "
            "FROM sweeps s ORDER BY created_at"
        )
        return [{**_sweep(r), "n_runs": r["n_runs"]} for r in rows]

    def set_sweep_state(self, db: Any, sweep_id: str, state: str, reason: str) -> None:
        self._exec(db, "UPDATE sweeps SET state = :state, reason = :reason WHERE id = :id",
                   {"state": state, "reason": reason, "id": sweep_id})  # fmt: skip

    def wandb_sweep(self, sweep_id: str, entity: str, project: str) -> str | None:
        """The W&B sweep that ``sync`` registered for this local sweep in entity/project, if any."""
        rows = self._read("SELECT wandb_sweep FROM wandb_sweeps WHERE sweep_id = :s AND entity = :e AND project = :p",
                          s=sweep_id, e=entity, p=project)  # fmt: skip
        return rows[0]["wandb_sweep"] if rows else None

    def set_wandb_sweep(self, sweep_id: str, entity: str, project: str, wandb_sweep: str) -> None:
        with self.transaction() as db:
            where = {"s": sweep_id, "e": entity, "p": project}
            self._exec(db, "DELETE FROM wandb_sweeps WHERE sweep_id = :s AND entity = :e AND project = :p", where)
            self._exec(db, "INSERT INTO wandb_sweeps (sweep_id, entity, project, wandb_sweep) VALUES (:s, :e, :p, :w)",
                       {**where, "w": wandb_sweep})  # fmt: skip

    # ------------------------------------------------------------ runs

    def runs(self, sweep_id: str, with_history: bool = False) -> list[dict[str, Any]]:
        runs = [_run(r) for r in self._read("SELECT * FROM runs WHERE sweep_id = :s ORDER BY seq", s=sweep_id)]
        if with_history:
            history: dict[str, list[dict]] = {r["id"]: [] for r in runs}
            for h in self._read(
                "SELECT h.run_id, h.metrics FROM history h JOIN runs r ON r.id = h.run_id "
                "WHERE r.sweep_id = :s ORDER BY h.run_id, h.idx", s=sweep_id,
            ):  # fmt: skip
                history[h["run_id"]].append(json.loads(h["metrics"]))
            for run in runs:
                run["history"] = history[run["id"]]
        return runs

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM runs WHERE id = :id", id=run_id)
        return _run(rows[0]) if rows else None

    def runs_after(self, sweep_id: str, seq: int) -> list[dict[str, Any]]:
        """The sweep's runs made after its ``seq``-th, in order (what an engine that keeps the runs it read reads
        next: a few rows, through the sweep's seq index)."""
        rows = self._read("SELECT * FROM runs WHERE sweep_id = :s AND seq > :n ORDER BY seq", s=sweep_id, n=seq)
        return [_run(r) for r in rows]

    def runs_by_id(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """These runs as the store holds them now (any order; an unknown id is left out)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start:start + 500]
            names = {f"i{i}": run_id for i, run_id in enumerate(chunk)}
            listed = ", ".join(f":{name}" for name in names)
            found += [_run(r) for r in self._read(f"SELECT * FROM runs WHERE id IN ({listed})", **names)]
        return found

    def insert_run(self, db: Any, run: dict[str, Any]) -> None:
        seq = self._exec(db, "SELECT COALESCE(MAX(seq), 0) + 1 FROM runs WHERE sweep_id = :s",
                         {"s": run["sweep_id"]}).scalar()  # fmt: skip
        now = time.time()
        self._exec(
            db,
            "INSERT INTO runs (id, sweep_id, seq, state, config, attempt, retry_of, search_info, pid, host, slot, "
            "gpu, heartbeat_at, started_at, grid_key) VALUES (:id, :sweep_id, :seq, 'running', :config, :attempt, "
            ":retry_of, :search_info, :pid, :host, :slot, :gpu, :now, :now, :grid_key)",
            {"id": run["id"], "sweep_id": run["sweep_id"], "seq": seq, "config": json.dumps(run["config"]),
             "attempt": run.get("attempt", 0), "retry_of": run.get("retry_of"),
             "search_info": json.dumps(run.get("search_info")), "pid": run.get("pid"), "host": host_name(),
             "slot": run.get("slot"), "gpu": run.get("gpu"), "now": now, "grid_key": run.get("grid_key")},
        )  # fmt: skip

    def set_pid(self, run_id: str, pid: int) -> None:
        self._write("UPDATE runs SET pid = :pid, heartbeat_at = :now WHERE id = :id", pid=pid, now=time.time(),
                    id=run_id)  # fmt: skip

    def heartbeat(self, run_id: str, run_dir: str | None = None, wandb_id: str | None = None) -> None:
        self._write(
            "UPDATE runs SET heartbeat_at = :now, run_dir = COALESCE(:run_dir, run_dir), "
            "wandb_id = COALESCE(:wandb_id, wandb_id) WHERE id = :id AND state = 'running'",
            now=time.time(), run_dir=run_dir, wandb_id=wandb_id, id=run_id,
        )  # fmt: skip

    def append_history(self, db: Any, run_id: str, metrics: dict[str, Any]) -> None:
        idx = self._exec(db, "SELECT COUNT(*) FROM history WHERE run_id = :id", {"id": run_id}).scalar()
        self._exec(db, "INSERT INTO history (run_id, idx, metrics) VALUES (:id, :idx, :metrics)",
                   {"id": run_id, "idx": idx, "metrics": json.dumps(metrics)})  # fmt: skip
        self._exec(db, "UPDATE runs SET heartbeat_at = :now WHERE id = :id", {"now": time.time(), "id": run_id})
        self._score_evaluation(db, run_id, metrics)

    def resume_run(self, db: Any, run_id: str, from_run: str, epoch: int) -> None:
        """``run_id`` resumed ``from_run``'s checkpoint after ``epoch`` evaluations: its history starts with theirs."""
        rows = self._exec(db, "SELECT metrics FROM history WHERE run_id = :r AND idx < :n ORDER BY idx",
                          {"r": from_run, "n": epoch}).fetchall()  # fmt: skip
        self._exec(db, "DELETE FROM history WHERE run_id = :r", {"r": run_id})
        self._exec(db, "DELETE FROM rungs WHERE run_id = :r", {"r": run_id})
        self._exec(db, "UPDATE runs SET metric_n = 0, metric_best = NULL WHERE id = :r", {"r": run_id})
        for idx, row in enumerate(rows):
            self._exec(db, "INSERT INTO history (run_id, idx, metrics) VALUES (:r, :i, :m)",
                       {"r": run_id, "i": idx, "m": row.metrics})  # fmt: skip
            self._score_evaluation(db, run_id, json.loads(row.metrics))
        self._exec(db, "UPDATE runs SET resumed_epoch = :e WHERE id = :r", {"e": epoch, "r": run_id})

    # ------------------------------------------------------------ what the scheduler reads, kept up to date

    def scoring(self, db: Any, sweep_id: str) -> Any:
        """The sweep's ``engine.Scoring`` (its config never changes: read once per store)."""
        if sweep_id not in self._scorings:
            from ignite_sweep.engine import Scoring

            found = self._exec(db, "SELECT config FROM sweeps WHERE id = :id", {"id": sweep_id}).scalar()
            self._scorings[sweep_id] = Scoring(json.loads(found) if found else {})
        return self._scorings[sweep_id]

    def _score_evaluation(self, db: Any, run_id: str, metrics: dict[str, Any]) -> None:
        """One more evaluation of a run: its valid-value count and best, and its rung when the count is a band."""
        run = self._exec(db, "SELECT sweep_id, metric_n, metric_best FROM runs WHERE id = :r", {"r": run_id}).fetchone()
        if run is None:
            return
        scoring = self.scoring(db, run.sweep_id)
        score = scoring.score(metrics)
        if score is None:
            return
        n, best = run.metric_n + 1, score if run.metric_best is None else min(run.metric_best, score)
        self._exec(db, "UPDATE runs SET metric_n = :n, metric_best = :b WHERE id = :r",
                   {"n": n, "b": best, "r": run_id})  # fmt: skip
        if n in scoring.band_set:
            self._exec(db, "INSERT INTO rungs (run_id, band, sweep_id, value) VALUES (:r, :n, :s, :v)",
                       {"r": run_id, "n": n, "s": run.sweep_id, "v": score})  # fmt: skip

    def _score_summary(self, db: Any, run_id: str, state: str, summary: dict | None) -> None:
        """A run's end: a result's summary metric (metric.target reads it); an interrupted run is no result, and
        the engine does not see it: its rungs go."""
        if state == "interrupted":
            self._exec(db, "DELETE FROM rungs WHERE run_id = :r", {"r": run_id})
            return
        run = self._exec(db, "SELECT sweep_id FROM runs WHERE id = :r", {"r": run_id}).fetchone()
        if run is not None and summary and state in RESULT_STATES:
            score = self.scoring(db, run.sweep_id).score(summary)
            self._exec(db, "UPDATE runs SET summary_score = :v WHERE id = :r", {"v": score, "r": run_id})

    def next_retry(self, db: Any, sweep_id: str, retries: int) -> dict[str, Any] | None:
        """The run to run again, if any: an interrupted one first, then a crashed one with retries left (oldest
        first), in either case one no other run already runs again."""
        rows = self._exec(db, "SELECT * FROM runs r WHERE r.sweep_id = :s AND (r.state = 'interrupted' OR "
                          "(r.state = 'crashed' AND r.attempt < :retries)) AND NOT EXISTS "
                          "(SELECT 1 FROM runs x WHERE x.retry_of = r.id) "
                          "ORDER BY CASE WHEN r.state = 'interrupted' THEN 0 ELSE 1 END, r.seq LIMIT 1",
                          {"s": sweep_id, "retries": retries}).fetchall()  # fmt: skip
        return _run(dict(rows[0]._mapping)) if rows else None

    def count_first_runs(self, db: Any, sweep_id: str) -> int:
        """Runs that are not another's re-run: what run_cap counts."""
        return int(self._exec(db, "SELECT COUNT(*) FROM runs WHERE sweep_id = :s AND retry_of IS NULL",
                              {"s": sweep_id}).scalar())  # fmt: skip

    def any_running(self, db: Any, sweep_id: str) -> bool:
        return self._exec(db, "SELECT 1 FROM runs WHERE sweep_id = :s AND state = 'running' LIMIT 1",
                          {"s": sweep_id}).fetchone() is not None  # fmt: skip

    def best_summary_score(self, db: Any, sweep_id: str) -> float | None:
        return self._exec(db, "SELECT MIN(summary_score) FROM runs WHERE sweep_id = :s", {"s": sweep_id}).scalar()

    def grid_taken(self, db: Any, sweep_id: str, key: str) -> bool:
        """Whether a run the engine sees (any but an interrupted one) has this grid point."""
        return self._exec(db, "SELECT 1 FROM runs WHERE sweep_id = :s AND grid_key = :k AND state != 'interrupted' "
                          "LIMIT 1", {"s": sweep_id, "k": key}).fetchone() is not None  # fmt: skip

    def set_grid_next(self, db: Any, sweep_id: str, index: int) -> None:
        self._exec(db, "UPDATE sweeps SET grid_next = :i WHERE id = :s", {"i": index, "s": sweep_id})

    def running_scores(self, db: Any, sweep_id: str) -> list[Any]:
        """(id, metric_n, metric_best) of the sweep's running runs."""
        return self._exec(db, "SELECT id, metric_n, metric_best FROM runs WHERE sweep_id = :s AND state = 'running'",
                          {"s": sweep_id}).fetchall()  # fmt: skip

    def band_threshold(self, db: Any, sweep_id: str, band: int, r: float) -> float:
        """The engine's threshold at a band: ``sorted(values at the band)[int(r * n)]``; +inf with no values."""
        n = self._exec(db, "SELECT COUNT(*) FROM rungs WHERE sweep_id = :s AND band = :b",
                       {"s": sweep_id, "b": band}).scalar()  # fmt: skip
        if not n:
            return float("inf")
        return float(self._exec(db, "SELECT value FROM rungs WHERE sweep_id = :s AND band = :b ORDER BY value "
                                "LIMIT 1 OFFSET :k", {"s": sweep_id, "b": band, "k": int(r * n)}).scalar())  # fmt: skip

    def rung_value(self, db: Any, run_id: str, band: int) -> float:
        return float(self._exec(db, "SELECT value FROM rungs WHERE run_id = :r AND band = :b",
                                {"r": run_id, "b": band}).scalar())  # fmt: skip

    def set_search_info(self, db: Any, run_id: str, info: Any) -> None:
        """What the search engine keeps with a run, changed while it runs (an Optuna pruner's rung values)."""
        self._exec(db, "UPDATE runs SET search_info = :i WHERE id = :r", {"i": json.dumps(info), "r": run_id})

    def request_stop(self, db: Any, run_ids: list[str]) -> None:
        if run_ids:
            self._exec(db, "UPDATE runs SET should_stop = 1 WHERE id = :id AND state = 'running'",
                       [{"id": i} for i in run_ids])  # fmt: skip

    def end_run(self, run_id: str, state: str, summary: dict | None = None, error: str | None = None,
                wait_s: float | None = None) -> bool:  # fmt: skip
        """Record a run's end, once: a run already ended (e.g. reaped as crashed) keeps its state."""
        assert state in TERMINAL, state
        return self.retrying(lambda: self._end_run(run_id, state, summary, error), wait_s)

    def _end_run(self, run_id: str, state: str, summary: dict | None, error: str | None) -> bool:
        with self.transaction() as db:
            changed = self._exec(
                db,
                "UPDATE runs SET state = :state, summary = COALESCE(:summary, summary), error = :error, "
                "ended_at = :now WHERE id = :id AND state = 'running'",
                {"state": state, "summary": json.dumps(summary) if summary is not None else None, "error": error,
                 "now": time.time(), "id": run_id},
            ).rowcount  # fmt: skip
            if changed == 1:
                self._score_summary(db, run_id, state, summary)
        return changed == 1

    def reap_stale(self, db: Any, sweep_id: str, timeout_s: float) -> list[str]:
        """Mark as crashed the running runs whose heartbeat is older than timeout_s, and those on this
        host whose process is gone (no need to wait for the timeout there; another host's pid means nothing
        here)."""
        now, host = time.time(), host_name()
        reaped = []
        rows = self._exec(db, "SELECT id, pid, host, heartbeat_at FROM runs WHERE sweep_id = :s AND state = 'running'",
                          {"s": sweep_id}).fetchall()  # fmt: skip
        for r in rows:
            if r.heartbeat_at < now - timeout_s:
                error = f"no heartbeat for {timeout_s:.0f}s: its process died"
            elif r.host == host and r.pid and not _alive(r.pid):
                error = f"its process {r.pid} is gone"
            else:
                continue
            self._exec(db, "UPDATE runs SET state = 'crashed', error = :error, ended_at = :now WHERE id = :id",
                       {"error": error, "now": now, "id": r.id})  # fmt: skip
            reaped.append(r.id)
        return reaped


def _close_queue(queue: list[int]) -> None:
    if queue[0] == os.getpid() and queue[1] >= 0:
        os.close(queue[1])
    queue[:] = [-1, -1]


def _say(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


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


def _sweep(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "config": json.loads(row["config"])}


def _run(row: dict[str, Any]) -> dict[str, Any]:
    run = dict(row)
    run["config"] = json.loads(row["config"])
    run["summary"] = json.loads(row["summary"]) if row["summary"] else {}
    run["search_info"] = json.loads(row["search_info"]) if row["search_info"] else None
    run["wandb_id"] = row.get("wandb_id") or row["id"]
    return run
