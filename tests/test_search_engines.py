"""The search-engine interface (``ignite_sweep.search``) with a second engine used only here: it proposes a fixed
list of configs and stops a run whose loss is above 1. Through the real agent loop (two agents at once, each
run a forked function logging with wandb offline) and a real SQLite store: each config claimed once, run_cap
exact, the engine's stop honoured."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

from ignite_sweep.backends.local import LocalBackend
from ignite_sweep.search import SearchEngine, Suggestion, register
from ignite_sweep.store.sql import LocalStore

CONFIGS = [{"start": 0.3}, {"start": 2.0}, {"start": 0.2}, {"start": 0.1}, {"start": 0.05}]


class FixedList(SearchEngine):
    exhausted = "the list has run"

    def suggest(self, store: Any, db: Any, sweep: dict[str, Any], prepared: Any, k: int = 1) -> list[Suggestion]:
        given = store.count_first_runs(db, sweep["id"])  # under the store's lock: no two agents get one config
        return [Suggestion(dict(c)) for c in self.config["scheduler"]["settings"]["configs"][given : given + k]]

    def stops(self, store: Any, db: Any, sweep_id: str) -> list[str]:
        return [r.id for r in store.running_scores(db, sweep_id) if r.metric_best is not None and r.metric_best > 1]


def train() -> None:
    import time

    import wandb

    run = wandb.init()
    for epoch in range(1, 4):
        run.log({"loss": run.config["start"] * epoch})
        time.sleep(0.3)
    run.finish()


def agent(url: str, sweep_id: str, out: Any) -> None:
    result = LocalBackend(LocalStore(url)).run_agent(sweep_id, function=train, echo=lambda _line: None)
    out.put(result.reason)


def test_a_second_engine_runs_through_the_agent_loop_and_the_store(tmp_path: Path, offline_wandb: Path) -> None:
    register("fixed-list", FixedList)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = {"method": "custom", "scheduler": {"engine": "fixed-list", "settings": {"configs": CONFIGS}},
              "metric": {"name": "loss", "goal": "minimize"}, "run_cap": 4,
              "parameters": {"start": {"values": [c["start"] for c in CONFIGS]}}}  # fmt: skip
    backend = LocalBackend(LocalStore(url))
    sweep_id = backend.create(config)
    ctx = multiprocessing.get_context("fork")  # the agents inherit the registered engine
    out = ctx.Queue()
    agents = [ctx.Process(target=agent, args=(url, sweep_id, out)) for _ in range(2)]
    for process in agents:
        process.start()
    reasons = [out.get(timeout=240) for _ in agents]
    for process in agents:
        process.join(timeout=60)
    runs = backend.runs(sweep_id)
    assert Counter(r.config["start"] for r in runs) == Counter(c["start"] for c in CONFIGS[:4])  # each once
    assert {r.config["start"]: r.state for r in runs} == {0.3: "finished", 2.0: "stopped", 0.2: "finished",
                                                          0.1: "finished"}  # fmt: skip
    assert "run_cap 4 reached" in reasons
    assert backend.sweep(sweep_id).state == "finished"
