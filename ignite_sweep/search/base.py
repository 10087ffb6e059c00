"""What the local backend asks of a search engine: one narrow base class, as Optuna keeps its samplers and pruners.

An engine decides; the store holds the state and the backend's state machine does the rest (the sweep's state, the
store's write lock, exactly-once claims, re-runs of interrupted and crashed runs, ``run_cap``, agent ``--count``,
heartbeats). Per claim and per report the backend calls, in order:

- ``prepare(store, sweep)``, before the write lock, on a plain read: slow work whose result ``suggest`` may use
  (bayes' Gaussian process); None when there is none;
- ``suggest(store, db, sweep, prepared, k)``, inside the lock: up to ``k`` configs to run next, or none when the
  engine has nothing more (``exhausted`` says why, for the sweep's finish reason);
- ``stops(store, db, sweep_id)``, inside the lock of a report, after its evaluations were recorded: the running
  runs to stop now (early termination);
- ``target_reached(store, db, sweep_id)``: whether the sweep has its result (``metric.target``).

``store`` is the sweep's ``LocalStore`` and ``db`` its open transaction; an engine reads what it needs through them
and keeps nothing of its own but caches of what never changes (a sweep's config never does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass
class Suggestion:
    """A config to run: the run's flat params, and what the engine wants kept with the run."""

    params: dict[str, Any]
    grid_key: str | None = None  # a grid point's key: the store marks the point taken
    search_info: Any = None  # the engine's own record of why (kept with the run as JSON)


class SearchEngine(ABC):
    exhausted = "the engine has no more suggestions"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def prepare(self, store: Any, sweep: dict[str, Any]) -> Any:
        return None

    @abstractmethod
    def suggest(self, store: Any, db: Any, sweep: dict[str, Any], prepared: Any, k: int = 1) -> list[Suggestion]:
        """Up to ``k`` configs to run next (none: the engine is exhausted)."""

    def stops(self, store: Any, db: Any, sweep_id: str) -> list[str]:
        return []

    def target_reached(self, store: Any, db: Any, sweep_id: str) -> bool:
        """``metric.target`` reached by a result's summary (the store keeps each result's score)."""
        target = (self.config.get("metric") or {}).get("target")
        if target is None:
            return False
        best, scoring = store.best_summary_score(db, sweep_id), store.scoring(db, sweep_id)
        return best is not None and best <= scoring.sign * target
