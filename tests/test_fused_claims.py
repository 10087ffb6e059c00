"""A fused group claimed but never started (`agent --fuse K`): a Ctrl-C or a failing store while the agent claims
the group's K runs leaves none of them `running`. Each is recorded `interrupted` (or, where the store cannot be
written, noted on this machine so that the next agent here records it), and the next agent runs them again first
without spending an attempt. A real SQLite store; the Ctrl-C (a real SIGINT) and the failure arrive at a chosen claim
through a LocalBackend subclass."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sweep_helpers import FAST

from ignite_sweep import faults
from ignite_sweep.backends.local import LocalBackend
from ignite_sweep.store.sql import LocalStore
from ignite_sweep.sweepfile import validate_sweep

LRS = [0.01, 0.02]
INTERRUPTED = "the agent was interrupted before it started the run"
STOPPED = "the agent stopped before it started the run"


class ClaimHook(LocalBackend):
    """A LocalBackend that calls ``before(n)`` ahead of its n-th claim (1: the group's first)."""

    def __init__(self, store: LocalStore, before: Callable[[int], None]) -> None:
        super().__init__(store)
        self.before, self.claims = before, 0

    def claim(self, sweep_id: str, slot: str | None = None, gpu: str | None = None
              ) -> tuple[dict[str, Any] | None, str]:  # fmt: skip
        self.claims += 1
        self.before(self.claims)
        return super().claim(sweep_id, slot=slot, gpu=gpu)


@pytest.fixture
def store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The store's file, in a folder of its own; this machine's notes of cut-short runs under tmp_path too."""
    monkeypatch.setenv("IGNITE_SWEEP_FAULTS_DIR", str(tmp_path / "cut-short"))
    return tmp_path / "store" / "sweeps.db"


def grid_sweep(store_file: Path) -> str:
    config = validate_sweep({"method": "grid", "metric": {"name": "val/accuracy", "goal": "maximize"},
                             "parameters": {**FAST, "lr": {"values": LRS}}})  # fmt: skip
    return LocalBackend(LocalStore(store_file)).create(config)


def runs_again_first(store_file: Path, sweep_id: str, cut: dict[str, Any]) -> None:
    """The next agent's first claim: the cut-short run again, the same attempt (an interrupt spends none)."""
    again, _ = LocalBackend(LocalStore(store_file)).claim(sweep_id)
    assert again is not None and again.get("retry_of") == cut["id"], again
    assert again["config"] == cut["config"] and again["attempt"] == cut["attempt"] == 0


def test_ctrl_c_while_a_group_is_claimed_interrupts_every_member_and_the_next_agent_runs_them(
    store_file: Path,
) -> None:
    sweep_id = grid_sweep(store_file)
    lines: list[str] = []

    def ctrl_c(n: int) -> None:
        if n == 2:  # between the group's two claims
            os.kill(os.getpid(), signal.SIGINT)

    result = ClaimHook(LocalStore(store_file), ctrl_c).run_agent(sweep_id, fuse=2, echo=lines.append)
    assert (result.runs, result.reason) == (0, "interrupted"), lines
    assert not [line for line in lines if " started" in line], lines  # none of them started
    store = LocalStore(store_file)
    cut = store.runs(sweep_id.split("/", 1)[1])
    assert [(r["state"], r["error"], r["pid"]) for r in cut] == [("interrupted", INTERRUPTED, None)] * 2
    assert sorted(r["config"]["lr"] for r in cut) == LRS

    result = LocalBackend(store).run_agent(sweep_id, fuse=2, echo=lines.append)
    assert (result.runs, result.reason) == (2, "every grid point has run"), lines
    again = store.runs(sweep_id.split("/", 1)[1])[2:]
    assert [r["retry_of"] for r in again] == [r["id"] for r in cut]  # the interrupted runs, nothing new
    assert all(r["state"] == "finished" and r["attempt"] == 0 and r["config"] == c["config"]
               for r, c in zip(again, cut, strict=True)), again  # fmt: skip
    assert all(f"run {r['id']} started (continues {c['id']}) (trains with 1 more)" in "\n".join(lines)
               for r, c in zip(again, cut, strict=True)), lines  # fmt: skip


def test_a_store_failing_while_a_group_is_claimed_records_the_claimed_runs_interrupted(store_file: Path) -> None:
    """The store raises at the group's second claim (SQLite's I/O error, as SQLAlchemy raises it) but can still be
    written: the run claimed before is recorded `interrupted` at once; the agent stops on the machine fault."""
    sweep_id = grid_sweep(store_file)

    def io_error(n: int) -> None:
        if n == 2:
            raise sqlalchemy.exc.OperationalError("INSERT INTO runs", {}, sqlite3.OperationalError("disk I/O error"))

    with pytest.raises(faults.MachineFault, match="disk i/o error"):
        ClaimHook(LocalStore(store_file), io_error).run_agent(sweep_id, fuse=2, echo=lambda _line: None)
    cut = LocalStore(store_file).runs(sweep_id.split("/", 1)[1])
    assert [(r["state"], r["error"]) for r in cut] == [("interrupted", STOPPED)]
    assert faults.cut_short_runs() == {}  # recorded: nothing left for the next agent to note
    runs_again_first(store_file, sweep_id, cut[0])


def test_a_store_gone_while_a_group_is_claimed_leaves_a_note_the_next_agent_records(store_file: Path) -> None:
    """The store's folder goes away at the group's second claim (its connections with it): that claim fails, and the
    run claimed before cannot be recorded either; it is noted on this machine, and the next agent, the store back,
    records it `interrupted` and runs it again first."""
    sweep_id = grid_sweep(store_file)
    folder, away = store_file.parent, store_file.parent.with_name("store-away")

    claimed: list[dict[str, Any]] = []

    def store_gone(n: int) -> None:
        if n == 2:
            claimed.extend(agent.store.runs(sweep_id.split("/", 1)[1]))
            agent.store.engine.dispose()  # its connections go with the folder
            folder.rename(away)

    agent = ClaimHook(LocalStore(store_file), store_gone)
    with pytest.raises(faults.MachineFault, match="the sweep store's folder is gone") as fault:
        agent.run_agent(sweep_id, fuse=2, echo=lambda _line: None)
    assert fault.value.advice().startswith(f"machine fault: {folder}: the sweep store's folder is gone (deleted, "
                                           "moved or unmounted) (put it back, then run the agent again")  # fmt: skip
    assert not folder.exists()  # looking for the fault did not make the folder again, empty
    (first,) = claimed  # the group's first run, claimed before the store went
    assert faults.cut_short_runs() == {first["id"]: STOPPED}  # noted on this machine
    away.rename(folder)  # the store is back
    store = LocalStore(store_file)
    assert [(r["id"], r["state"]) for r in store.runs(sweep_id.split("/", 1)[1])] == [(first["id"], "running")]

    runs_again_first(store_file, sweep_id, first)
    assert (store.run(first["id"])["state"], store.run(first["id"])["error"]) == ("interrupted", STOPPED)
    assert faults.cut_short_runs() == {}  # recorded: the note is gone
