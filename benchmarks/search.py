"""Search quality of the engines, measured: the same tasks and budgets for every method, over many seeds.

Methods (each a sweep config, validated as ``create`` validates it):
  random           W&B's random search
  bayes            W&B's bayes (its Gaussian process)
  bayes_hyperband  W&B's bayes + early_terminate hyperband (min_iter 1, eta 3: bands at epochs 1, 3, 9)
  tpe              Optuna TPE (method: custom; multivariate, constant liar), seeded
  tpe_median       TPE + Optuna's MedianPruner (5 startup trials, judged from epoch 2)
  tpe_asha         TPE + Optuna's SuccessiveHalvingPruner (min_resource 1, reduction_factor 3: rungs 1, 3, 9)
  gp               Optuna's GPSampler (its Gaussian process; CmaEs would sample categorical values at random)

Each sweep runs in a real store (a fresh SQLite file) driven as one agent drives it, sequentially: ``claim`` gives
the run's config, ``report`` records each epoch's evaluation and says whether the engine wants the run stopped
(then no more epochs are fed), and the run's end goes to the store as the agent records it (``end_run``:
``stopped`` when the sweep stopped it before its last epoch, ``failed`` for a diverged run, else ``finished``, with
the trainer's summary). No training processes, no W&B: an evaluation is read from a table of recorded learning
curves (``benchmarks/record_curves.py``: the built-in trainer on digits, 512 configs x 10 epochs, SGD's lr x
momentum x weight_decay x batch_size). The search space is that grid as ``values:`` lists, so every method draws
only configs the table has.

Tasks: ``digits-acc`` (maximize val/accuracy: the tabular task) and ``digits-loss`` (minimize val/loss, the same
curves: a second objective with fewer ties). With ``--live`` a third, ``digits-live``: the built-in ``mlp`` really
trained (in this process, W&B disabled), over continuous ranges, ``--live-epochs`` epochs per run.

Per task, method and seed the sweep runs until it has made at least ``2 x budget`` runs (or used ``2 x budget x
epochs`` epochs) and at least ``budget x epochs`` epochs. The seed seeds W&B's engine (Python's and numpy's global
generators, which it draws from) and the Optuna sampler (``seed=`` in the sweep's ``optimizer``).

Measured per task and method, medians over seeds:
  evals_to_random_best   runs claimed until the best result so far is at least as good as random search's best
                         after ``budget`` runs (same seed); a seed that never gets there within its sweep counts as
                         infinitely many (``reached`` says how many seeds did)
  epochs_to_random_best  the epochs those runs consumed (what pruning saves)
  best_at_equal_runs     the best result after ``budget`` runs
  best_at_equal_epochs   the best result after ``budget x epochs`` epochs (pruning methods run more configs)
  claim_ms               median time of one claim (engine suggestion included)
A result is a finished or stopped run's summary metric (its last evaluation), what ``best`` ranks.
Last line JSON: {"tasks": {task: {method: {...}}}, "done_when": {...}} where done_when compares TPE with random on
digits-acc: the issue asks for median TPE evaluations <= 40% of random's.

Usage: python benchmarks/search.py [--seeds 10] [--budget 40] [--methods random,tpe,...] [--tasks digits-acc,...]
       [--table benchmarks/data/digits_curves.csv] [--live] [--live-seeds 3] [--live-budget 8] [--live-epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TABLE = HERE / "data" / "digits_curves.csv"
GRID_KEYS = ("lr", "momentum", "weight_decay", "batch_size")
TRAIN_SIZE = 12942  # digits' training images (augmented), for the iteration count the trainer reports
TASKS: dict[str, tuple[str, str]] = {
    "digits-acc": ("val/accuracy", "maximize"),
    "digits-loss": ("val/loss", "minimize"),
    "digits-live": ("val/accuracy", "maximize"),
}
HYPERBAND = {"type": "hyperband", "min_iter": 1, "eta": 3}
OPTIMIZERS: dict[str, str] = {
    "tpe": "optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=SEED)",
    "tpe_median": "(optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=SEED), "
                  "optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1))",
    "tpe_asha": "(optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=SEED), "
                "optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))",
    "gp": "optuna.samplers.GPSampler(seed=SEED)",
}  # fmt: skip
METHODS = ("random", "bayes", "bayes_hyperband", "tpe", "tpe_median", "tpe_asha", "gp")
PRUNING = ("bayes_hyperband", "tpe_median", "tpe_asha")


# ---------------------------------------------------------------- tasks: what a run's evaluations are


class Table:
    """Recorded learning curves: per config, what the trainer's reporter got after each epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.curves: dict[tuple[float, ...], list[dict[str, float]]] = {}
        self.status: dict[tuple[float, ...], str] = {}
        self.values: dict[str, list[Any]] = {k: [] for k in GRID_KEYS}
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                key = tuple(float(row[k]) for k in GRID_KEYS)
                curve = []
                for e in range(1, 1000):
                    acc, loss = row.get(f"acc_{e}"), row.get(f"loss_{e}")
                    if acc is None:
                        break
                    if acc == "" or loss == "":
                        break
                    curve.append({"val/accuracy": float(acc), "val/loss": float(loss)})
                self.curves[key] = curve
                self.status[key] = row["status"]
                for k in GRID_KEYS:
                    value = int(row[k]) if k == "batch_size" else float(row[k])
                    if value not in self.values[k]:
                        self.values[k].append(value)
        for k in GRID_KEYS:
            self.values[k].sort()
        self.epochs = max(len(c) for c in self.curves.values())
        missing = math.prod(len(v) for v in self.values.values()) - len(self.curves)
        if missing:
            raise SystemExit(f"{path}: {missing} configs of the grid not recorded yet (benchmarks/record_curves.py)")

    def parameters(self) -> dict[str, Any]:
        return {k: {"values": list(v)} for k, v in self.values.items()}

    def run(self, config: dict[str, Any], report: Callable[[dict[str, Any]], bool]) -> tuple[str, dict[str, Any]]:
        key = tuple(float(config[k]) for k in GRID_KEYS)
        curve = self.curves[key]
        return replay(curve, int(config["batch_size"]), self.epochs, self.status[key] == "diverged", report)


def replay(curve: list[dict[str, float]], batch_size: int, epochs: int, diverged: bool,
           report: Callable[[dict[str, Any]], bool]) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """Feed a recorded curve as the trainer's reporter gets it; (the run's end state, its summary) as the trainer
    and ``states.end_state`` make them."""
    per_epoch = math.ceil(TRAIN_SIZE / batch_size)
    best: dict[str, float] = {}
    status, done = "finished", 0
    for epoch, metrics in enumerate(curve, 1):
        best = {"val/accuracy": max(best.get("val/accuracy", -math.inf), metrics["val/accuracy"]),
                "val/loss": min(best.get("val/loss", math.inf), metrics["val/loss"])}  # fmt: skip
        done = epoch
        stop = report({**metrics, **{f"best/{k}": v for k, v in best.items()}, "epoch": epoch,
                       "iteration": epoch * per_epoch})  # fmt: skip
        if stop:
            status = "stopped" if epoch < epochs else "finished"  # a stop after the last epoch cut nothing short
            break
    if diverged and status == "finished":
        status = "diverged"
    summary = {"status": status, "stopped_by": "sweep" if status == "stopped" else None, "epochs_completed": done,
               **{f"best/{k}": v for k, v in best.items()}, **(curve[done - 1] if done else {})}  # fmt: skip
    state = {"finished": "finished", "stopped": "stopped", "diverged": "failed"}[status]
    return state, summary


class Live:
    """The built-in trainer's ``mlp`` on digits, really trained here (one thread, W&B disabled)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def parameters(self) -> dict[str, Any]:
        return {"dataset": {"value": "digits"}, "model": {"value": "mlp"}, "epochs": {"value": self.epochs},
                "dropout": {"value": 0.2}, "log_interval": {"value": 100000},
                "lr": {"distribution": "log_uniform_values", "min": 0.002, "max": 0.5},
                "momentum": {"distribution": "uniform", "min": 0.0, "max": 0.95},
                "weight_decay": {"values": [0.0, 0.0001, 0.001, 0.01]},
                "batch_size": {"values": [64, 128, 256, 512]}}  # fmt: skip

    def run(self, config: dict[str, Any], report: Callable[[dict[str, Any]], bool]) -> tuple[str, dict[str, Any]]:
        from ignite_sweep.training.config import TrainConfig
        from ignite_sweep.training.train import train

        summary = train(TrainConfig.from_dict({**config, "data_dir": os.environ.get("IGNITE_SWEEP_DATA", "data")}),
                        reporter=report)  # fmt: skip
        state = {"stopped": "stopped", "diverged": "failed"}.get(summary["status"], "finished")
        keep = ("status", "stopped_by", "epochs_completed", "best/val/accuracy", "best/val/loss", "val/accuracy",
                "val/loss")  # fmt: skip
        return state, {k: summary.get(k) for k in keep}


# ---------------------------------------------------------------- methods: the sweep configs


def sweep_config(method: str, task: str, parameters: dict[str, Any], seed: int, folder: Path) -> dict[str, Any]:
    metric, goal = TASKS[task]
    base: dict[str, Any] = {"name": f"{task}-{method}-{seed}", "metric": {"name": metric, "goal": goal},
                            "parameters": parameters}  # fmt: skip
    if method in ("random", "bayes", "bayes_hyperband"):
        base["method"] = "random" if method == "random" else "bayes"
        if method == "bayes_hyperband":
            base["early_terminate"] = dict(HYPERBAND)
        return base
    source = folder / f"opt_{method}_{seed}.py"
    source.write_text(f"import optuna\n\nSEED = {seed}\n\n\ndef optimizer():\n    return {OPTIMIZERS[method]}\n")
    return {**base, "method": "custom",
            "scheduler": {"engine": "optuna", "source": source.name, "optimizer": "optimizer"}}  # fmt: skip


def validated(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The config as ``ignite-sweep create`` stores it (W&B's schema, the hyperparameters, the engine's dry run)."""
    from ignite_sweep.sweepfile import validate_sweep

    return validate_sweep(config, "benchmark sweep", folder=folder, warn=lambda message: None)


# ---------------------------------------------------------------- one sweep, driven as one agent drives it


def drive(task: Any, config: dict[str, Any], seed: int, folder: Path, min_runs: int, max_runs: int,
          min_epochs: int, max_epochs: int) -> dict[str, Any]:  # fmt: skip
    """Run one sweep in a fresh store; per run: (epochs used so far, its result or None), and claim times."""
    import numpy as np

    from ignite_sweep.backends.local import LocalBackend
    from ignite_sweep.store.sql import LocalStore

    backend = LocalBackend(LocalStore(f"sqlite:///{folder}/s-{config['name']}.db"))
    sweep_id = backend.create(config)
    random.seed(seed)
    np.random.seed(seed)
    metric = config["metric"]["name"]
    runs: list[tuple[int, float | None]] = []
    claims: list[float] = []
    epochs = 0
    while not (len(runs) >= min_runs and epochs >= min_epochs and (len(runs) >= max_runs or epochs >= max_epochs)):
        if len(runs) >= 4 * max_runs:  # a safety net: pruning so hard that the epochs never come
            break
        started = time.perf_counter()
        run, why = backend.claim(sweep_id)
        claims.append(time.perf_counter() - started)
        if run is None:
            raise SystemExit(f"{config['name']}: no run claimed after {len(runs)} runs: {why}")
        used = 0

        def report(metrics: dict[str, Any], run_id: str = run["id"]) -> bool:
            nonlocal used
            used += 1
            return backend.report(run_id, metrics)

        state, summary = task.run(run["config"], report)
        backend.store.end_run(run["id"], state, summary)
        epochs += used
        value = summary.get(metric)
        ok = state in ("finished", "stopped") and isinstance(value, (int, float)) and math.isfinite(value)
        runs.append((epochs, float(value) if ok else None))
    return {"runs": runs, "claims": claims}


# ---------------------------------------------------------------- the measures


def best_after(runs: list[tuple[int, float | None]], sign: float, n_runs: int | None = None,
               n_epochs: int | None = None) -> float | None:  # fmt: skip
    """The best result among the first ``n_runs`` runs, or among the runs ended within ``n_epochs`` epochs."""
    chosen = runs[:n_runs] if n_runs is not None else [r for r in runs if r[0] <= n_epochs]
    values = [v for _, v in chosen if v is not None]
    return (max(values) if sign > 0 else min(values)) if values else None


def first_reaching(runs: list[tuple[int, float | None]], sign: float, target: float) -> tuple[float, float]:
    """(runs, epochs) until a result at least as good as ``target``; (inf, inf) if none."""
    for i, (epochs, value) in enumerate(runs, 1):
        if value is not None and sign * value >= sign * target - 1e-12:
            return float(i), float(epochs)
    return math.inf, math.inf


def median(values: list[float]) -> float | None:
    if not values:
        return None
    found = statistics.median(values)
    return None if math.isinf(found) else round(found, 4)


def summarise(results: dict[str, dict[int, dict[str, Any]]], goal: str, budget: int, epochs_per_run: int,
              ) -> dict[str, dict[str, Any]]:  # fmt: skip
    sign = 1.0 if goal == "maximize" else -1.0
    seeds = sorted(results["random"])
    targets = {s: best_after(results["random"][s]["runs"], sign, n_runs=budget) for s in seeds}
    out: dict[str, dict[str, Any]] = {}
    for method, by_seed in results.items():
        evals, epochs, at_runs, at_epochs, claims = [], [], [], [], []
        for s in seeds:
            runs = by_seed[s]["runs"]
            n, e = first_reaching(runs, sign, targets[s]) if targets[s] is not None else (math.inf, math.inf)
            evals.append(n)
            epochs.append(e)
            at_runs.append(best_after(runs, sign, n_runs=budget))
            at_epochs.append(best_after(runs, sign, n_epochs=budget * epochs_per_run))
            claims += by_seed[s]["claims"]
        ratio = [n / r for n, r in zip(evals, out["random"]["_evals"], strict=True)] if "random" in out else evals
        out[method] = {
            "evals_to_random_best": median(evals),
            "epochs_to_random_best": median(epochs),
            "reached": f"{sum(not math.isinf(n) for n in evals)}/{len(seeds)}",
            "ratio_to_random_evals": median(ratio) if "random" in out else 1.0,
            "best_at_equal_runs": median([v for v in at_runs if v is not None]),
            "best_at_equal_epochs": median([v for v in at_epochs if v is not None]),
            "runs_made": median([float(len(by_seed[s]["runs"])) for s in seeds]),
            "claim_ms": round(1000 * statistics.median(claims), 1),
            "_evals": evals,
        }
    for row in out.values():
        row.pop("_evals")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=40, help="runs: random's budget, and the equal budget")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tasks", default="digits-acc,digits-loss")
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--live", action="store_true", help="also digits-live: the built-in mlp really trained")
    parser.add_argument("--live-seeds", type=int, default=3)
    parser.add_argument("--live-budget", type=int, default=8)
    parser.add_argument("--live-epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write every sweep's runs here (JSON)")
    args = parser.parse_args()
    os.environ["WANDB_MODE"] = "disabled"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    methods = ["random"] + [m for m in args.methods.split(",") if m and m != "random"]  # random: the reference
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; allowed: {', '.join(METHODS)}")
    tasks = [t for t in args.tasks.split(",") if t] + (["digits-live"] if args.live else [])
    table = Table(args.table) if any(t != "digits-live" for t in tasks) else None
    report: dict[str, Any] = {"table": os.path.relpath(args.table, HERE.parent) if table else None,
                              "tasks": {}, "settings": {}}  # fmt: skip
    everything: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        folder = Path(tmp)
        for task_name in tasks:
            live = task_name == "digits-live"
            task: Any = Live(args.live_epochs) if live else table
            seeds = args.live_seeds if live else args.seeds
            budget = args.live_budget if live else args.budget
            per_run = task.epochs
            bounds = {"min_runs": budget, "max_runs": budget if live else 2 * budget, "min_epochs": budget * per_run,
                      "max_epochs": (1 if live else 2) * budget * per_run}  # fmt: skip
            report["settings"][task_name] = {"seeds": seeds, "budget_runs": budget, "epochs_per_run": per_run,
                                             "budget_epochs": budget * per_run, **bounds}  # fmt: skip
            results: dict[str, dict[int, dict[str, Any]]] = {}
            for method in methods:
                results[method] = {}
                started = time.perf_counter()
                for seed in range(seeds):
                    config = validated(sweep_config(method, task_name, task.parameters(), seed, folder), folder)
                    results[method][seed] = drive(task, config, seed, folder, **bounds)
                goal = TASKS[task_name][1]
                sign = 1.0 if goal == "maximize" else -1.0
                bests = [best_after(r["runs"], sign, n_runs=budget) for r in results[method].values()]
                print(f"{task_name} {method}: {seeds} seeds in {time.perf_counter() - started:.0f}s, best after "
                      f"{budget} runs (median) {median([b for b in bests if b is not None])}", flush=True)  # fmt: skip
            report["tasks"][task_name] = summarise(results, TASKS[task_name][1], budget, per_run)
            everything[task_name] = results
            for method, row in report["tasks"][task_name].items():
                print(f"  {task_name} {method}: {row}", flush=True)
    acc = report["tasks"].get("digits-acc", {})
    if "tpe" in acc:
        tpe, rnd = acc["tpe"]["evals_to_random_best"], acc["random"]["evals_to_random_best"]
        report["done_when"] = {
            "task": "digits-acc",
            "tpe_evals_median": tpe,
            "random_evals_median": rnd,
            "tpe_over_random": round(tpe / rnd, 3) if tpe is not None and rnd else None,
            "tpe_over_random_budget": round(tpe / args.budget, 3) if tpe is not None else None,
            "median_per_seed_ratio": acc["tpe"]["ratio_to_random_evals"],
            "at_most_40_percent": bool(tpe is not None and rnd and tpe <= 0.4 * rnd),
        }
    if args.out:
        args.out.write_text(json.dumps(everything))
    print(json.dumps(report))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))  # the table's model factory (record_curves:mlp64), should a config name it
    main()
