"""W&B's open-source sweep engine (``sweeps``: grid, random, bayes, hyperband) behind the search interface.

The engine's own rules on what the store keeps up to date (``ignite_sweep.engine``: the grid's order and keys, the
hyperband bands and thresholds), so that a claim or a report costs a few indexed reads at 10,000 runs; bayes'
Gaussian process runs before the lock, on a plain read; random reads no runs. ``tests/test_scale.py`` replays sweeps
and compares every decision with the engine's own ``next_run`` and ``stop_runs`` on the whole sweep.
"""

from __future__ import annotations

from typing import Any

from ignite_sweep.engine import GridPlan, next_params
from ignite_sweep.search.base import SearchEngine, Suggestion


class WandbEngine(SearchEngine):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.method = config["method"]
        self.exhausted = "every grid point has run" if self.method == "grid" else SearchEngine.exhausted
        self._plan: GridPlan | None = None

    @property
    def plan(self) -> GridPlan:
        if self._plan is None:
            self._plan = GridPlan(self.config)
        return self._plan

    def prepare(self, store: Any, sweep: dict[str, Any]) -> Any:
        """grid: its plan is built (once per agent); bayes: its suggestion from a plain read of the sweep."""
        if self.method == "grid":
            self.plan  # noqa: B018 - built now, outside the lock
        if self.method != "bayes":
            return None
        return next_params(self.config, store.runs(sweep["id"], with_history=True))

    def suggest(self, store: Any, db: Any, sweep: dict[str, Any], prepared: Any, k: int = 1) -> list[Suggestion]:
        if self.method == "grid":
            point = self._next_grid_point(store, db, sweep)
            return [Suggestion(point[0], grid_key=point[1])] if point else []
        # random: the engine reads no runs; bayes: suggested before the lock, or now (a read of every run, under
        # the lock) only if that failed
        suggestion = prepared or next_params(
            self.config, [] if self.method == "random" else store.runs(sweep["id"], with_history=True))
        return [Suggestion(suggestion[0], search_info=suggestion[1])] if suggestion else []

    def _next_grid_point(self, store: Any, db: Any, sweep: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        """The engine's grid choice, the first point in its order no run has: from the sweep's cursor (every
        point before it is taken; an interrupted run's point is taken again by its re-run, which goes first)."""
        plan, index = self.plan, sweep["grid_next"]
        while index < plan.size and store.grid_taken(db, sweep["id"], plan.key(index)):
            index += 1
        store.set_grid_next(db, sweep["id"], min(index + 1, plan.size))
        return (plan.params(index), plan.key(index)) if index < plan.size else None

    def stops(self, store: Any, db: Any, sweep_id: str) -> list[str]:
        """``sweeps.stop_runs`` (hyperband) from what the store keeps: for each running run, its best value (its
        value at the band, with ``strict``) against the threshold at the last band it reached."""
        scoring = store.scoring(db, sweep_id)
        if not scoring.bands:
            return []
        thresholds: dict[int, float] = {}
        stops = []
        for run in store.running_scores(db, sweep_id):
            band = scoring.closest_band(run.metric_n)
            if band is None:
                continue
            if band not in thresholds:
                thresholds[band] = store.band_threshold(db, sweep_id, band, scoring.r)
            value = store.rung_value(db, run.id, band) if scoring.strict else run.metric_best
            if value > thresholds[band]:
                stops.append(run.id)
        return stops
