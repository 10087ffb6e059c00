"""What makes the local agent's start and the gap between its runs short, and what must stay true with it: a run
claimed ahead (while the agent imports torch) that never started is ``interrupted`` and runs first next time; a run
that released its agent (its end recorded) finishes its wandb run on its own while the next one starts, and
nothing that run forked holds the agent back."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ignite_sweep.backends.local import LocalBackend
from ignite_sweep.execution.process import Interrupts, reap, release_agent, run_in_child
from ignite_sweep.store.sql import LocalStore

SWEEP = {"method": "grid", "metric": {"name": "loss", "goal": "minimize"}, "parameters": {"x": {"values": [1, 2]}}}


def test_a_run_claimed_ahead_that_never_started_is_interrupted_and_runs_first(tmp_path: Path) -> None:
    backend = LocalBackend(LocalStore(f"sqlite:///{tmp_path / 'store.db'}"))
    sweep_id = backend.create(dict(SWEEP))
    ahead = backend._claim_ahead(sweep_id, None, None)
    with pytest.raises(KeyboardInterrupt), backend._unstarted(ahead, failing_only=True):
        raise KeyboardInterrupt  # Ctrl-C while the agent warms up
    (first,) = backend.store.runs(sweep_id.split("/")[1])
    assert (first["state"], first["config"], first["error"]) == ("interrupted", {"x": 1},
                                                                 "its agent stopped before it started")
    run, _ = backend.claim(sweep_id)
    assert run is not None and run["retry_of"] == first["id"] and run["config"] == {"x": 1}


def test_a_claim_ahead_that_the_agent_takes_is_the_claim_it_would_make(tmp_path: Path) -> None:
    backend = LocalBackend(LocalStore(f"sqlite:///{tmp_path / 'store.db'}"))
    sweep_id = backend.create(dict(SWEEP))
    ahead = backend._claim_ahead(sweep_id, "slot-a", None)
    with backend._unstarted(ahead, failing_only=True):
        pass  # warmed up: the claim stays the agent's
    run, reason = ahead.take()
    assert not ahead.pending and ahead.take() is None
    (row,) = backend.store.runs(sweep_id.split("/")[1])
    assert (run["id"], run["config"], run["slot"], reason) == (row["id"], {"x": 1}, "slot-a", "")
    assert row["state"] == "running"


def test_a_released_run_lets_the_agent_go_on_and_what_it_forked_does_not_hold_it() -> None:
    def releases() -> int:
        release_agent()
        time.sleep(1.0)  # its wandb run finishing
        return 0

    started = time.monotonic()
    outcome = run_in_child(releases, Interrupts(), on_start=lambda _pid: None, release=True)
    assert outcome.ok and outcome.released and time.monotonic() - started < 0.8
    assert not reap(outcome.released)  # still finishing
    assert reap(outcome.released, block=True)

    def forks_and_ends() -> int:  # a keeper or a user's function, still alive when the run's process ends
        if os.fork() == 0:
            time.sleep(3.0)
            os._exit(0)
        return 3

    started = time.monotonic()
    outcome = run_in_child(forks_and_ends, Interrupts(), on_start=lambda _pid: None, release=True)
    assert (outcome.code, outcome.released) == (3, None)
    assert time.monotonic() - started < 2.0  # its exit, not its grandchild's, ended the wait
