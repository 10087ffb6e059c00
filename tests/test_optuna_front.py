"""Multi-objective sweeps (``metrics:``, ``method: custom``, the Optuna engine) in what users see: the Pareto front
(``ignite_sweep.pareto``, checked against Optuna's ``study.best_trials``) in ``status`` and ``status --json``,
``best`` (the front's configs, or one with ``--metric``), the report's scatter, the pool's view and the agent's
per-run line; a ``metrics:`` sweep of the built-in trainer through ``ignite-sweep run --workers 2`` on a real
SQLite store and on a real PostgreSQL server, with a conditional search space from a source file. (Pruning is
single-objective in Optuna: tests/test_optuna.py runs a pruned sweep.)"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import cli

from ignite_sweep.backends.base import RunRecord, SweepRecord
from ignite_sweep.pareto import pareto_front

optuna = pytest.importorskip("optuna")

ACCURACY, LOSS = {"name": "val/accuracy", "goal": "maximize"}, {"name": "val/loss", "goal": "minimize"}
OBJECTIVES = [("val/accuracy", "maximize"), ("val/loss", "minimize")]

SPACE = '''
import optuna


def opt():
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=3)


def space(trial):
    trial.suggest_float("lr", 1e-3, 0.3, log=True)
    if trial.suggest_categorical("optimizer", ["sgd", "adam"]) == "sgd":  # momentum only for SGD
        trial.suggest_float("momentum", 0.0, 0.95)
'''


def best_trials(runs: list[RunRecord], objectives: list[tuple[str, str]]) -> set[str]:
    """The ids of the runs Optuna's ``study.best_trials`` names, the runs told to it as the engine tells them
    (finished and stopped: COMPLETE with their values; the rest FAIL)."""
    study = optuna.create_study(directions=[goal for _, goal in objectives])
    for run in runs:
        values = [run.summary.get(name) for name, _ in objectives]
        if run.state in ("finished", "stopped") and all(isinstance(v, (int, float)) for v in values):
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=values))
        else:
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    return {runs[t.number].id for t in study.best_trials}


# ---------------------------------------------------------------- the front, a pure function


def test_the_front_is_optunas_best_trials() -> None:
    """Random sweeps (values on a coarse grid, so ties and equal points happen; missing objectives, failed and
    crashed runs with summaries), two and three objectives in every mix of goals: the same runs as Optuna's."""
    rng = random.Random(0)
    goals = [("a", "minimize"), ("b", "maximize"), ("c", "minimize")]
    sizes = []
    for case in range(300):
        objectives = [(name, rng.choice(["minimize", "maximize"]) if case % 2 else goal)
                      for name, goal in goals[: 2 + case % 2]]  # fmt: skip
        runs = []
        for i in range(rng.randint(1, 25)):
            summary = {name: rng.randint(0, 6) / 2 for name, _ in goals if rng.random() > 0.1}
            state = rng.choice(["finished"] * 5 + ["stopped", "failed", "crashed", "running", "interrupted"])
            runs.append(RunRecord(f"r{i}", state, {}, summary))
        front = pareto_front(runs, objectives)
        assert {r.id for r in front} == best_trials(runs, objectives), (case, objectives)
        assert [r.id for r in front] == [r.id for r in runs if r in front]  # in the runs' order
        sizes.append(len(front))
    assert max(sizes) >= 4 and 0 in sizes  # fronts of many runs were compared, and empty ones


def test_the_agents_line_and_the_pools_view_show_every_objective() -> None:
    from ignite_sweep.execution.pool import PoolView

    multi = SweepRecord("local/x", "x", "custom", "running", {"metrics": [ACCURACY, LOSS]})
    single = SweepRecord("local/x", "x", "custom", "running", {"metric": ACCURACY})
    shown = multi.scores_text({"val/accuracy": 0.5, "val/loss": 1.25, "x": 2.0})
    assert shown == " val/accuracy=0.5000 val/loss=1.2500"
    assert single.scores_text({"val/accuracy": 0.5, "val/loss": 1.25}) == " val/accuracy=0.5000"  # as before
    assert single.to_json().keys() == {"id", "name", "method", "state", "reason", "metric", "goal", "config"}
    view = PoolView(None, "minimize", [], objectives=multi.objectives)
    view.record_end({"run": "r1", "state": "finished", "metric": None}, {"val/accuracy": 0.9, "val/loss": 0.3})
    view.record_end({"run": "r2", "state": "finished", "metric": None,
                     "metrics": {"val/accuracy": 0.8, "val/loss": 0.2}}, {"val/accuracy": 0.1})  # the summary's
    view.record_end({"run": "r3", "state": "finished", "metric": None}, {"val/accuracy": 0.7, "val/loss": 0.4})
    assert view.scores(view.ended[1].summary) == " val/accuracy=0.8 val/loss=0.2"
    assert view.front_text() == "Pareto front: 2 runs (r1, r2)"
    table = view.table()
    assert [c.header for c in table.columns][-3:] == ["val/accuracy", "val/loss", "status"]
    assert "Pareto front: 2 runs (r1, r2)" in str(table.title)


# ---------------------------------------------------------------- through the CLI, two workers


def sweep_file(tmp_path: Path, run_cap: int, **extra: Any) -> Path:
    (tmp_path / "space.py").write_text(SPACE)
    body = {"method": "custom", "scheduler": {"engine": "optuna", "source": "space.py", "optimizer": "opt",
                                              "search_space": "space"},
            "metrics": [ACCURACY, LOSS], "run_cap": run_cap,
            "parameters": {"dataset": {"value": "digits"}, "model": {"value": "mlp"}, "epochs": {"value": 1},
                           "log_interval": {"value": 50}, "val_batch_size": {"value": 512}}, **extra}  # fmt: skip
    path = tmp_path / "mo.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def run_sweep(tmp_path: Path, run_cap: int, *store: str) -> tuple[str, dict[str, Any]]:
    """``ignite-sweep run --workers 2`` to the run cap; checks what any store must hold, returns (the sweep id,
    ``status --json``)."""
    done = cli("run", str(sweep_file(tmp_path, run_cap)), "--backend", "local", "--workers", "2", "--stagger", "0",
               *store, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sweep_id = next(line for line in done.stdout.splitlines() if line.startswith("local/"))
    assert f"pool done: 2 slots, {run_cap} finished" in done.stdout, done.stdout
    status = cli("status", sweep_id, "--json", *store, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)
    runs = found["runs"]
    assert [r["state"] for r in runs] == ["finished"] * run_cap
    for run in runs:  # the conditional space: momentum only with SGD
        config = run["config"]
        assert set(config) - {"dataset", "model", "epochs", "log_interval", "val_batch_size"} == (
            {"lr", "optimizer", "momentum"} if config["optimizer"] == "sgd" else {"lr", "optimizer"}), config
        assert 1e-3 <= config["lr"] <= 0.3
    assert len({json.dumps(r["config"], sort_keys=True) for r in runs}) == run_cap  # no trial twice
    records = [RunRecord(r["id"], r["state"], r["config"], r["summary"]) for r in runs]
    front = best_trials(records, OBJECTIVES)
    assert front and found["sweep"]["pareto_front"] == [r["id"] for r in runs if r["id"] in front]
    assert [r["id"] for r in runs if r["pareto"]] == found["sweep"]["pareto_front"]
    assert found["sweep"]["best_run"] is None and [o["name"] for o in found["sweep"]["objectives"]] == [
        "val/accuracy", "val/loss"]  # fmt: skip
    return sweep_id, found


def test_a_multi_objective_sweep_through_the_cli_on_sqlite(tmp_path: Path) -> None:
    sweep_id, found = run_sweep(tmp_path, 4)
    runs, front = found["runs"], found["sweep"]["pareto_front"]
    from ignite_sweep.store.sql import LocalStore

    stored = LocalStore().runs(sweep_id.split("/")[1])
    assert sorted(r["search_info"]["trial"] for r in stored) == [0, 1, 2, 3]  # each trial claimed once

    table = cli("status", sweep_id, cwd=tmp_path).stdout
    assert "val/accuracy (maximize)" in table and "val/loss (minimize)" in table and "Pareto front" in table
    assert {line.split()[1] for line in table.splitlines() if " * " in line} == set(front)

    best = cli("best", sweep_id, cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    by_id = {r["id"]: r for r in runs}
    assert sorted(json.dumps(d, sort_keys=True) for d in yaml.safe_load_all(best.stdout)) == sorted(
        json.dumps(by_id[i]["config"], sort_keys=True) for i in front)  # fmt: skip
    lowest = min((r for r in runs), key=lambda r: r["summary"]["val/loss"])
    one = cli("best", sweep_id, "--metric", "val/loss", cwd=tmp_path)
    assert yaml.safe_load(one.stdout) == lowest["config"] and f"best run {lowest['id']}" in one.stdout
    wrong = cli("best", sweep_id, "--metric", "val/acc", cwd=tmp_path)
    assert wrong.returncode == 1 and wrong.stderr.strip().splitlines() == [
        f"error: option '--metric': 'val/acc' is not an objective of sweep '{sweep_id}'; allowed: val/accuracy | "
        "val/loss"]  # fmt: skip

    report = cli("report", sweep_id, "-o", "r.html", "--png", "r.png", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    assert 'id="pareto"' in page and f"Pareto front: {len(front)} of 4 results" in page
    assert "val/accuracy (maximize)</th><th>val/loss (minimize)" in page  # every objective in the table
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "r.png").shape[:2] == (1500, 1400)  # the front's row of panels


def test_a_multi_objective_sweep_through_the_cli_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    run_sweep(tmp_path, 3, "--store", postgres_url)


def test_a_target_with_metrics_is_refused_at_create_in_one_line(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, 2, metrics=[ACCURACY, {**LOSS, "target": 0.1}])
    done = cli("create", str(path), "--backend", "local", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"error: {path}: key 'metrics.1.target': a target needs a single objective (metric:); a metrics: sweep runs "
        "to its run_cap, or until `ignite-sweep stop`"]  # fmt: skip
