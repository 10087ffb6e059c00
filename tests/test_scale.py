"""Sweeps of thousands of runs: claim and report read what the store keeps up to date (grid points taken, each
run's metric at each hyperband band, the best summary) instead of every run. Their decisions must be the
`sweeps` engine's: these tests replay sweeps (runs finishing, failing, crashing, interrupted and resumed,
metrics with NaN, infinities and gaps) and compare every decision with the engine's on the whole sweep."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
from pathlib import Path
from typing import Any

import pytest

from ignite_sweep.backends.local import LocalBackend, _new_id
from ignite_sweep.engine import next_params, runs_to_stop
from ignite_sweep.store.sql import LocalStore

METRIC = {"name": "loss", "goal": "minimize"}


def new_sweep(tmp_path: Path, config: dict[str, Any], url: str | None = None) -> tuple[LocalBackend, str]:
    backend = LocalBackend(LocalStore(url or f"sqlite:///{tmp_path / 'scale.db'}"))
    return backend, backend.create(config)  # the engine's configs as they are (no TrainConfig names here)


def engine_view(backend: LocalBackend, sweep_id: str) -> list[dict[str, Any]]:
    return backend.store.runs(sweep_id.split("/", 1)[1], with_history=True)


def retry_due(rows: list[dict[str, Any]], retries: int) -> bool:
    retried = {r["retry_of"] for r in rows if r["retry_of"]}
    return any(r["id"] not in retried and (r["state"] == "interrupted" or r["state"] == "crashed"
                                           and r["attempt"] < retries) for r in rows)  # fmt: skip


GRIDS = [
    {"a": {"values": [1, 2, 3]}, "b": {"values": ["x", "y"]}, "c": {"value": 7}},
    {"n": {"min": 1, "max": 4}, "q": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}},
    {"dup": {"values": [1, 1.0, 2]}, "d": {"values": [{"k": 1}, {"k": 2, "j": 3}]}},
    {"outer": {"parameters": {"lr": {"values": [0.1, 0.2]}, "wd": {"values": [0, 1e-4]}}}, "e": {"values": [5, 6]}},
]


@pytest.mark.parametrize("parameters", GRIDS, ids=["values", "ranges", "duplicates-and-dicts", "nested"])
def test_grid_claims_are_the_engines_choice_through_retries_and_interrupts(
    tmp_path: Path, parameters: dict[str, Any]
) -> None:
    config = {"method": "grid", "metric": METRIC, "parameters": parameters}
    backend, sweep_id = new_sweep(tmp_path, config)
    rng, compared = random.Random(3), 0
    while True:
        rows = engine_view(backend, sweep_id)
        expected = None if retry_due(rows, 2) else next_params(config, rows)
        run, reason = backend.claim(sweep_id)
        if run is None:
            assert expected is None and reason == "every grid point has run", reason
            break
        if expected is not None:
            assert json.dumps(run["config"], sort_keys=True) == json.dumps(expected[0], sort_keys=True)  # 1.0 is not 1
            assert not run.get("retry_of")
            compared += 1
        else:
            assert run["retry_of"]
        state = rng.choice(["finished", "finished", "failed", "crashed", "interrupted", "running"])
        if state != "running":
            backend.store.end_run(run["id"], state, {"loss": rng.random()})
        for other in rows:  # now and then a run left running ends
            if other["state"] == "running" and rng.random() < 0.5:
                backend.store.end_run(other["id"], "finished", {"loss": 1.0})
    runs = engine_view(backend, sweep_id)
    assert compared >= 4 and next_params(config, runs) is None  # the engine agrees: every point has run


HYPERBANDS = [
    {"type": "hyperband", "min_iter": 1, "eta": 3},
    {"type": "hyperband", "min_iter": 2, "eta": 2, "strict": True},
    {"type": "hyperband", "max_iter": 9, "s": 2, "eta": 3},
]


@pytest.mark.parametrize("goal", ["minimize", "maximize"])
@pytest.mark.parametrize("early_terminate", HYPERBANDS, ids=["min_iter", "strict", "max_iter"])
def test_hyperband_stops_are_the_engines_at_every_report(tmp_path: Path, goal: str,
                                                        early_terminate: dict[str, Any]) -> None:  # fmt: skip
    config = {"method": "random", "metric": {"name": "loss", "goal": goal}, "early_terminate": early_terminate,
              "parameters": {"lr": {"min": 0.0, "max": 1.0}}}  # fmt: skip
    backend, sweep_id = new_sweep(tmp_path, config)
    sid = sweep_id.split("/", 1)[1]
    rng, live, stops_seen = random.Random(11), [], 0
    for _ in range(160):
        if len(live) < 4:
            run, _ = backend.claim(sweep_id)
            if run.get("retry_of"):  # an interrupted run's re-run resumes from its 2nd evaluation or so
                with backend.store.transaction() as db:
                    backend.store.resume_run(db, run["id"], run["retry_of"], rng.randint(0, 3))
            live.append(run["id"])
        run_id = rng.choice(live)
        value = rng.choice([rng.gauss(1.0, 0.5)] * 6 + [math.nan, math.inf, True, None])
        metrics = {"epoch": 1} if value is None else {"loss": value}
        stop = backend.report(run_id, metrics)
        rows = engine_view(backend, sweep_id)
        expected = set(runs_to_stop(config, rows))
        with backend.store.transaction() as db:
            assert set(backend.engine(backend.store.sweep(sid)).stops(backend.store, db, sid)) == expected
        assert stop == (run_id in expected or next(r for r in rows if r["id"] == run_id)["should_stop"] == 1)
        stops_seen += len(expected)
        if stop or rng.random() < 0.1:  # it ends: stopped when asked, else any way a run ends
            live.remove(run_id)
            state = "stopped" if stop else rng.choice(["finished", "failed", "crashed", "interrupted"])
            backend.store.end_run(run_id, state, {"loss": 0.5})
    assert stops_seen > 0  # the replay did exercise stops


def test_metric_target_is_read_from_results_only(tmp_path: Path) -> None:
    config = {"method": "random", "metric": {"name": "acc", "goal": "maximize", "target": 0.9},
              "parameters": {"lr": {"min": 0.0, "max": 1.0}}}  # fmt: skip
    backend, sweep_id = new_sweep(tmp_path, config)
    first, _ = backend.claim(sweep_id)
    backend.store.end_run(first["id"], "interrupted", {"acc": 0.95})  # no result: does not count
    second, _ = backend.claim(sweep_id)
    assert second["retry_of"] == first["id"]
    backend.store.end_run(second["id"], "finished", {"acc": 0.89})
    third, _ = backend.claim(sweep_id)
    assert third is not None
    backend.store.end_run(third["id"], "stopped", {"acc": 0.91})
    run, reason = backend.claim(sweep_id)
    assert run is None and reason == "metric target 0.9 reached"


def grow(backend: LocalBackend, sweep_id: str, n: int) -> None:
    """n finished runs of a 60 x 60 grid's first points, 3 evaluations each, written as agents write them."""
    sid = sweep_id.split("/", 1)[1]
    with backend.store.transaction() as db:
        for i in range(n):
            run = {"id": _new_id(), "sweep_id": sid, "config": {"a": i // 60, "b": i % 60}, "grid_key": None}
            run["grid_key"] = backend.engine(backend.store.sweep(sid)).plan.run_key(run["config"])
            backend.store.insert_run(db, run)
            for epoch in range(3):
                backend.store.append_history(db, run["id"], {"loss": 1.0 / (epoch + 1 + i % 7)})
            backend.store.end_run(run["id"], "finished", {"loss": 0.2})


def _claim_and_report(url: str, sweep_id: str, out: Any) -> None:
    backend, claimed = LocalBackend(LocalStore(url)), []
    os.environ["IGNITE_SWEEP_HOST"] = f"node-{os.getpid()}"
    while True:
        run, _ = backend.claim(sweep_id)
        if run is None:
            break
        claimed.append((run["id"], run["config"]["a"], run["config"]["b"]))
        for epoch in range(3):
            if backend.report(run["id"], {"loss": 1.0 / (epoch + 2)}):
                break
        backend.store.end_run(run["id"], "finished", {"loss": 0.3})
    out.put(claimed)


def test_eight_processes_claim_and_report_on_a_sweep_of_2000_runs(store_url: str, tmp_path: Path) -> None:
    """Every claim distinct (run and grid point), run_cap exact, while hyperband reads and writes rungs."""
    config = {"method": "grid", "metric": METRIC, "run_cap": 2040,
              "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3},
              "parameters": {"a": {"values": list(range(60))}, "b": {"values": list(range(60))}}}  # fmt: skip
    backend, sweep_id = new_sweep(tmp_path, config, store_url)
    grow(backend, sweep_id, 2000)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_claim_and_report, args=(store_url, sweep_id, out)) for _ in range(8)]
    for w in workers:
        w.start()
    claimed = [c for _ in workers for c in out.get(timeout=300)]
    for w in workers:
        w.join(timeout=30)
    assert len(claimed) == 40 and len({c[0] for c in claimed}) == 40  # run_cap exact, no run twice
    assert len({c[1:] for c in claimed}) == 40  # no grid point twice
    assert sorted(c[1] * 60 + c[2] for c in claimed) == list(range(2000, 2040))  # the engine's next 40, in order
    assert len(backend.runs(sweep_id)) == 2040
