"""Run states: what the store records and the backends, the engine and the tables read (below all of them).

A run is one of running | finished | stopped | failed | crashed | interrupted. ``stopped`` is a result (the sweep
decided the run had seen enough: hyperband, ``metric.target``, ``ignite-sweep stop``); ``interrupted`` is unfinished
work (its agent was interrupted: Ctrl-C, SIGTERM, SIGHUP; or a machine fault cut it short): no result, run again
first by the next agent; ``crashed`` (its process died) is run again too, a bounded number of times.
"""

from __future__ import annotations

RUN_STATES = ("running", "finished", "stopped", "failed", "crashed", "interrupted")
RESULT_STATES = ("finished", "stopped", "failed", "crashed")
"""Runs that are a result of the sweep (``interrupted`` is not: it is run again)."""
