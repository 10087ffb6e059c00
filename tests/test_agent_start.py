"""What makes the gap between a local agent's runs short, and what must stay true with it: a run that released its
agent (its end recorded) finishes its wandb run on its own while the next one starts, and nothing that run forked
holds the agent back."""

from __future__ import annotations

import os
import time

from ignite_sweep.execution.process import Interrupts, reap, release_agent, run_in_child

SWEEP = {"method": "grid", "metric": {"name": "loss", "goal": "minimize"}, "parameters": {"x": {"values": [1, 2]}}}


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
