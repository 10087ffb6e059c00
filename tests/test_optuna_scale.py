"""What keeps an Optuna claim cheap on a large sweep stays the store's truth: an agent reads only the runs that
changed since its last claim (``OptunaEngine.runs_now``: the runs made since, and those running then or now), and
what it holds is, claim after claim, what a full read of the store holds, also after a claim whose transaction
rolled back the ends it had read; its next trial is the one an engine rebuilt from the store would ask. The default
TPE reads each finished trial once, and suggests what Optuna's own TPESampler suggests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from ignite_sweep.backends.local import LocalBackend
from ignite_sweep.search.optuna_engine import OptunaEngine
from ignite_sweep.search.optuna_tpe import read_once_tpe
from ignite_sweep.store.sql import LocalStore
from ignite_sweep.sweepfile import validate_sweep

pytest.importorskip("optuna")

CONFIG = {"method": "custom", "scheduler": {"engine": "optuna"}, "metric": {"name": "loss"},
          "parameters": {"x": {"min": 0.0, "max": 1.0}, "c": {"values": ["a", "b", "c"]}}}  # fmt: skip


def test_an_agent_reads_only_what_changed_and_holds_what_the_store_holds(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store.db")
    backend = LocalBackend(store)
    sweep_id = backend.create(validate_sweep(CONFIG, for_function=True))
    sid = sweep_id.split("/")[1]
    engine = backend.engine(store.sweep(sid))
    rng = random.Random(0)
    for i in range(30):
        if i == 20:  # a claim that reads a run's end, then rolls back: the run is running again in the store
            running = next(r for r in store.runs(sid) if r["state"] == "running")
            with pytest.raises(RuntimeError), store.transaction() as db:
                store.end_run(running["id"], "crashed", error="reaped")
                read = {r["id"]: r for r in engine.runs_now(store, db, sid)}
                assert read[running["id"]]["state"] == "crashed"
                raise RuntimeError("the claim's insert failed")
            assert store.run(running["id"])["state"] == "running"
        run, reason = backend.claim(sweep_id)
        assert run is not None, reason
        with store.transaction() as db:
            assert engine.runs_now(store, db, sid) == store.runs(sid)  # the store's truth, read incrementally
        fresh = OptunaEngine(store.sweep(sid)["config"])  # an agent that never claimed here: reads it all
        runs = store.runs(sid)
        assert fresh.next_suggestion(runs, sid).params == engine.next_suggestion(runs, sid).params
        for other in [r for r in store.runs(sid) if r["state"] == "running" and r["id"] != run["id"]]:
            if rng.random() < 0.5:
                state = rng.choice(["finished", "finished", "stopped", "crashed", "failed"])
                store.end_run(other["id"], state, summary={"loss": rng.random()})
    assert len(engine._read[sid].runs) == 30


def test_a_store_that_is_not_what_the_agent_read_is_read_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store.db")
    backend = LocalBackend(store)
    sweep_id = backend.create(validate_sweep(CONFIG, for_function=True))
    sid = sweep_id.split("/")[1]
    for _ in range(3):
        backend.claim(sweep_id)
    engine = backend.engine(store.sweep(sid))
    with store.transaction() as db:
        assert len(engine.runs_now(store, db, sid)) == 3
    read = engine._read[sid]
    read.runs[2] = {**read.runs[2], "seq": 7}  # not the store's order: caught, read whole
    with store.transaction() as db:
        assert not read.catch_up(store, db, sid)
    read.runs[2] = {**read.runs[2], "seq": 3}
    read.running.discard(read.runs[2]["id"])
    read.runs[2] = {**read.runs[2], "state": "finished"}  # an end the store does not hold: read again
    with store.transaction() as db:
        assert engine.runs_now(store, db, sid) == store.runs(sid)


@pytest.mark.parametrize("directions", [["minimize"], ["maximize"], ["minimize", "maximize"]])
def test_the_default_tpe_suggests_what_optunas_own_does(directions: list[str]) -> None:
    """Suggestion for suggestion, Optuna's TPESampler's: over a long history with tied values, running trials (the
    constant liar's) that end later, a conditional parameter (sampled alone), and a second study built with the same
    trial ids and other trials (as an agent's study is rebuilt), asked by the same samplers."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space = {"x": FloatDistribution(1e-4, 1.0, log=True), "c": CategoricalDistribution(["a", "b", "c"])}
    options = {"multivariate": True, "constant_liar": True, "seed": 1}
    samplers = read_once_tpe()(**options), optuna.samplers.TPESampler(**options)
    rng = random.Random(0)
    for _ in range(2):
        history = [optuna.trial.create_trial(params={"x": 10 ** rng.uniform(-4, 0), "c": rng.choice("abc")},
                                             distributions=space, values=[round(rng.random(), 1) for _ in directions])
                   for _ in range(200)]  # fmt: skip
        studies = [optuna.create_study(directions=directions, sampler=sampler) for sampler in samplers]
        running: list[list[Any]] = []
        for study in studies:
            study.add_trials(history)
        for i in range(24):
            trials = [study.ask(space) for study in studies]
            if trials[0].params["c"] == "a":
                assert len({trial.suggest_float("y", 0.0, 1.0) for trial in trials}) == 1
            assert trials[0].params == trials[1].params
            values = [round(rng.random(), 1) for _ in directions]
            running.append([trials, values])
            if i % 3:
                for study, trial in zip(studies, running[0][0], strict=True):
                    study.tell(trial, running[0][1])
                running.pop(0)
