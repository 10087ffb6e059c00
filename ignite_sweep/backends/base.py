"""The backend boundary: what the CLI needs from a place that runs sweeps.

Contract (each backend passes tests/test_backends.py):

- ``create(config, project, entity) -> sweep_id``: register a validated W&B sweep config. The id is
  ``local/<8 chars>`` or ``entity/project/<id>``.
- ``run_agent(sweep_id, count, max_consecutive_failures, slot)``: run runs until the sweep is exhausted,
  ``count`` runs were done, the sweep is stopped, or the agent is interrupted. Each run executes through the run
  interface (``execution.runs``: the built-in trainer, a program, a function), its end state decided by
  ``states.end_state``. Returns an ``AgentResult``.
- ``runs(sweep_id) -> list[RunRecord]`` in creation order; ``sweep(sweep_id) -> SweepRecord``.
- ``stop(sweep_id)``: no new runs; running runs finish (``wandb sweep --stop``).
- ``cancel(sweep_id)``: no new runs; running runs are stopped now, gracefully (``wandb sweep --cancel``).
- ``pause(sweep_id)`` / ``resume(sweep_id)``: no new runs until resumed; agents wait (``--pause``/``--resume``).
- ``sweeps()``: the sweeps this backend knows (may be empty where listing is not possible).

Run states: ``ignite_sweep.states`` (below the store and the backends). ``continues`` names the run a re-run
continues.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ignite_sweep.states import RESULT_STATES, RUN_STATES

__all__ = ["RESULT_STATES", "RUN_STATES", "AgentResult", "Backend", "RunRecord", "SweepRecord"]


@dataclass
class RunRecord:
    id: str
    state: str
    config: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    runtime_s: float | None = None
    slot: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    continues: str | None = None  # the run this one runs again (a crashed or interrupted one)
    resumed_epoch: int | None = None  # the epoch it resumed after, from the checkpoint of the run it continues
    wandb_id: str | None = None  # the W&B run it logs to, when not its own id (a resumed retry: its predecessor's)

    @property
    def epoch(self) -> int:
        """Evaluations so far (resumed ones included), also while it runs."""
        return len(self.history)

    @property
    def epochs_reached(self) -> int | None:
        """The epochs a run reached, for tables: the built-in trainer's ``epochs_completed``, else the evaluations
        it reported (``epoch``: a program's history rows, one per report of the sweep metric); None when neither
        is known (a W&B run listed without its history)."""
        done = self.summary.get("epochs_completed")
        if isinstance(done, (int, float)) and not isinstance(done, bool) and math.isfinite(done):
            return int(done)
        return self.epoch if self.history else None

    def metric(self, name: str) -> float | None:
        value = self.summary.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "config": self.config,
            "summary": self.summary,
            "error": self.error,
            "runtime_s": self.runtime_s,
            "slot": self.slot,
            "continues": self.continues,
            "resumed_epoch": self.resumed_epoch,
            "epoch": self.epoch,
            "wandb_id": self.wandb_id or self.id,
        }


@dataclass
class SweepRecord:
    id: str
    name: str
    method: str
    state: str
    config: dict[str, Any]
    reason: str | None = None
    n_runs: int | None = None

    @property
    def metric(self) -> str | None:
        return (self.config.get("metric") or {}).get("name")

    @property
    def goal(self) -> str:
        return (self.config.get("metric") or {}).get("goal", "minimize")

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(name, goal) of each objective: the ``metrics:`` list (multi-objective), else the one ``metric``."""
        from ignite_sweep.pareto import objectives_of

        return objectives_of(self.config)

    @property
    def multi_objective(self) -> bool:
        """A ``metrics:`` sweep (at least two objectives): no best run, a Pareto front (``ignite_sweep.pareto``)."""
        return len(self.objectives) > 1

    def scores_text(self, summary: dict[str, Any] | None) -> str:
        """A run's value on each objective, as the agent's per-run line shows it (" name=0.1234 ..."; a value
        that is missing or not a float is left out)."""
        shown = [(name, (summary or {}).get(name)) for name, _ in self.objectives]
        return "".join(f" {name}={value:.4f}" for name, value in shown if isinstance(value, float))

    def to_json(self) -> dict[str, Any]:
        found = {
            "id": self.id,
            "name": self.name,
            "method": self.method,
            "state": self.state,
            "reason": self.reason,
            "metric": self.metric,
            "goal": self.goal,
            "config": self.config,
        }
        if self.multi_objective:
            found["objectives"] = [{"name": name, "goal": goal} for name, goal in self.objectives]
        return found


@dataclass
class AgentResult:
    runs: int
    reason: str
    states: dict[str, int] = field(default_factory=dict)


class Backend(ABC):
    name: str = ""

    @abstractmethod
    def create(self, config: dict[str, Any], project: str | None = None, entity: str | None = None,
               warn: Callable[[str], None] | None = None) -> str: ...  # fmt: skip

    @abstractmethod
    def run_agent(self, sweep_id: str, count: int | None = None, max_consecutive_failures: int = 5,
                  slot: str | None = None, echo: Callable[[str], None] | None = None,
                  function: Callable[[], Any] | None = None, fuse: int = 1) -> AgentResult: ...  # fmt: skip

    @abstractmethod
    def sweep(self, sweep_id: str) -> SweepRecord: ...

    @abstractmethod
    def runs(self, sweep_id: str) -> list[RunRecord]: ...

    @abstractmethod
    def stop(self, sweep_id: str) -> None: ...

    @abstractmethod
    def cancel(self, sweep_id: str) -> None: ...

    @abstractmethod
    def pause(self, sweep_id: str) -> None: ...

    @abstractmethod
    def resume(self, sweep_id: str) -> None: ...

    def sweeps(self) -> list[SweepRecord]:
        return []

    def preflight(self) -> None:
        """Fail fast, in one line, where the backend cannot serve at all (no login, no server)."""
        return None

    def runs_with_history(self, sweep_id: str) -> list[RunRecord]:
        """``runs`` with each run's per-evaluation metrics in ``history`` (for learning curves)."""
        return self.runs(sweep_id)

    def best_run(self, sweep_id: str, metric: str | None = None) -> RunRecord | None:
        """The run with the best sweep metric among the results that logged it (an interrupted run is none).
        ``metric``: the best on that one of the sweep's objectives (a ``metrics:`` sweep has no best without it:
        its runs have a Pareto front, ``ignite_sweep.pareto``)."""
        sweep = self.sweep(sweep_id)
        goals = dict(sweep.objectives)
        name = metric or sweep.metric
        if not name or name not in goals:
            return None
        scored = [r for r in self.runs(sweep_id) if r.state in RESULT_STATES and r.metric(name) is not None]
        if not scored:
            return None
        sign = 1.0 if goals[name] == "maximize" else -1.0
        return max(scored, key=lambda r: sign * (r.metric(name) or 0.0))
