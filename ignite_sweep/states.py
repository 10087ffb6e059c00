"""Run states: what the store records and the backends, the engine and the tables read (below all of them).

A run is one of running | finished | stopped | failed | crashed | interrupted. ``stopped`` is a result (the sweep
decided the run had seen enough: hyperband, ``metric.target``, ``ignite-sweep stop``); ``interrupted`` is unfinished
work (its agent was interrupted: Ctrl-C, SIGTERM, SIGHUP; or a machine fault cut it short): no result, run again
first by the next agent; ``crashed`` (its process died) is run again too, a bounded number of times.

Which state a run ends in is decided in one place, ``end_state``, from an ``Ending`` (what any kind of run, on
any backend, knows when it ends).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field

RUN_STATES = ("running", "finished", "stopped", "failed", "crashed", "interrupted")
RESULT_STATES = ("finished", "stopped", "failed", "crashed")
"""Runs that are a result of the sweep (``interrupted`` is not: it is run again)."""


@dataclass(frozen=True)
class Ending:
    """All that is known when a run ended, whatever ran it: the one input of ``end_state``.

    The built-in trainer gives ``status`` (its summary's: finished | early-stopped | stopped | diverged |
    interrupted); a program or a function gives its exit ``code`` (negative: killed by that signal) and ``killed``
    (killed after its kill delay); a run that raised gives ``raised`` (its one-line error; ``twice`` for a second
    Ctrl-C); a process that died before it could record its end gives ``died`` (how, in words). ``stopped_by`` is
    what stopped it first: ``sweep`` (hyperband, a target, ``cancel``) or a signal's name; ``agent_interrupted``
    whether its agent was interrupted (Ctrl-C, SIGTERM, SIGHUP); ``no_result`` a note when a program that
    exited 0 never logged the sweep's metric (it is ``finished`` without a result)."""

    status: str | None = None
    code: int | None = None
    stopped_by: str | None = None
    agent_interrupted: bool = False
    killed: bool = False
    raised: str | None = None
    twice: bool = False
    died: str | None = None
    epochs: int | None = None
    no_result: str | None = None  # a program that never logged the sweep's metric: what it logged instead
    last_error: Callable[[], str] | None = field(default=None, compare=False)


def interruption(stopped_by: str | None, agent_interrupted: bool = False) -> bool:
    """Whether a run stopped by ``stopped_by`` (a signal's name, ``sweep``, or None) is unfinished work
    (``interrupted``, run again) rather than a result (``stopped``): Ctrl-C or a closed terminal (SIGINT, SIGHUP)
    always, any signal when its agent was interrupted; never a stop by the sweep (hyperband, target, cancel)."""
    return stopped_by not in (None, "sweep") and (agent_interrupted or stopped_by in ("SIGINT", "SIGHUP"))


def end_state(ending: Ending) -> tuple[str, str | None]:
    """How a run ended: (state, error), decided here for every kind of run and every backend.

    A process that died before recording is ``interrupted`` when its agent was interrupted, else ``crashed``; a
    second Ctrl-C is ``interrupted``; a run that raised ``failed``; a stop by the sweep is ``stopped`` (even if
    Ctrl-C comes during its kill delay); a signal from outside the sweep ``interrupted`` when ``interruption``
    says so; a diverged loss ``failed``; a program's exit 0 ``finished``, another code ``failed``, a signal
    ``crashed``."""
    if ending.died is not None:
        return ("interrupted" if ending.agent_interrupted else "crashed"), ending.died
    if ending.twice:
        return "interrupted", "interrupted twice: ended without its final evaluation"
    if ending.raised is not None:
        return "failed", ending.raised
    if ending.status is not None:  # the built-in trainer's summary (train() applied ``interruption`` already)
        if ending.status == "interrupted":
            return "interrupted", f"interrupted ({ending.stopped_by}) after {ending.epochs} epochs"
        if ending.status == "diverged":
            return "failed", "diverged: the loss became NaN or infinite"
        return ("stopped" if ending.status == "stopped" else "finished"), None
    note = " (killed after --kill-delay)" if ending.killed else ""
    if interruption(ending.stopped_by, ending.agent_interrupted):
        return "interrupted", f"interrupted ({ending.stopped_by}){note}"
    if ending.stopped_by is not None:
        return "stopped", f"stopped by the sweep{note}" if note else None
    code = ending.code if ending.code is not None else 1
    if code == 0:
        return "finished", ending.no_result
    if code > 0:
        return "failed", (ending.last_error() if ending.last_error else "") or f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return "crashed", f"killed by {name}"
