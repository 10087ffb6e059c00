"""How claim and report scale with the size of a sweep: 100, 1,000 and 10,000 runs of 10 evaluations each.

For each method (grid, random, random + hyperband, bayes, Optuna's TPE) one sweep grows in a real store (SQLite
in a temp folder, or ``--store URL``); at each size the script claims runs (each then recorded finished) and reports 10
evaluations into runs it claimed, through ``LocalBackend.claim`` / ``report`` as an agent does, and times each
call. It also times every write transaction of the store (from asking for the lock to commit) and prints the
longest time the lock was held. Then 8 processes claim and report at once on a sweep already holding 2,000 runs
and the longest wait for the lock is printed. Last line: JSON.
Usage: python benchmarks/store_scale.py [--store URL] [--sizes 100,1000,10000] [--samples 20] [--bayes-max 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EVALS = 10
METRIC = {"name": "val/loss", "goal": "minimize"}
GRID_A, GRID_B = 100, 150  # 15,000 points: room for every size and the claims measured on top
METHODS: dict[str, dict[str, Any]] = {
    "grid": {"method": "grid", "parameters": {"seed": {"values": list(range(GRID_A))},
                                              "lr": {"values": [round(0.01 * (i + 1), 2) for i in range(GRID_B)]}}},
    "random": {"method": "random", "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4,
                                                         "max": 0.1}, "batch_size": {"values": [16, 32, 64, 128]}}},
    "random+hyperband": {"method": "random", "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3},
                         "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
                                        "batch_size": {"values": [16, 32, 64, 128]}}},
    "bayes": {"method": "bayes", "parameters": {"lr": {"min": 0.0001, "max": 0.1}, "momentum": {"min": 0.0,
                                                                                                "max": 0.99}}},
    "tpe": {"method": "custom", "scheduler": {"engine": "optuna"},  # Optuna's TPE: multivariate, constant liar
            "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1},
                           "batch_size": {"values": [16, 32, 64, 128]}}},
}  # fmt: skip
LOCK = {"held": [], "wait": []}


def instrument_lock() -> None:
    """Time every outermost write transaction: the wait (connect + take the lock) and the hold (to commit)."""
    from ignite_sweep.store.sql import LocalStore

    original = LocalStore.transaction.__wrapped__  # the generator under @contextmanager

    @contextlib.contextmanager
    def timed(self: Any) -> Any:
        outer = getattr(self._local, "conn", None) is None
        start = time.perf_counter()
        gen = original(self)
        conn = next(gen)
        got = time.perf_counter()
        try:
            yield conn
        except BaseException as exc:
            with contextlib.suppress(StopIteration):
                gen.throw(exc)
            raise
        else:
            with contextlib.suppress(StopIteration):
                next(gen)
        if outer:
            LOCK["wait"].append(got - start)
            LOCK["held"].append(time.perf_counter() - got)

    LocalStore.transaction = timed  # type: ignore[method-assign]


def config_for(method: str) -> dict[str, Any]:
    from ignite_sweep.sweepfile import validate_sweep

    return validate_sweep({**METHODS[method], "metric": METRIC, "name": f"scale-{method}"})


def point(method: str, i: int, rng: random.Random) -> dict[str, Any]:
    if method == "grid":  # the engine's order: the last parameter varies fastest
        return {"seed": i // GRID_B, "lr": round(0.01 * (i % GRID_B + 1), 2)}
    if method == "bayes":
        return {"lr": rng.uniform(0.0001, 0.1), "momentum": rng.uniform(0.0, 0.99)}
    return {"lr": 10 ** rng.uniform(-4, -1), "batch_size": rng.choice([16, 32, 64, 128])}


def grow(backend: Any, sweep_id: str, method: str, start: int, stop: int, rng: random.Random) -> None:
    """Add finished runs start..stop-1 with 10 evaluations each, through the store's own writes."""
    from ignite_sweep.backends.local import _new_id

    sid = sweep_id.split("/", 1)[1]
    store = backend.store
    for chunk in range(start, stop, 500):
        with store.transaction() as db:
            for i in range(chunk, min(stop, chunk + 500)):
                run = {"id": _new_id(), "sweep_id": sid, "config": point(method, i, rng)}
                if method == "tpe":  # what the engine keeps with a run it suggested: the trial it is
                    run["search_info"] = {"engine": "optuna", "trial": i, "params": run["config"], "system_attrs": {},
                                          "sampled": {}}  # fmt: skip
                store.insert_run(db, run)
                loss = rng.uniform(0.5, 2.0)
                for epoch in range(1, EVALS + 1):
                    loss *= rng.uniform(0.8, 1.0)
                    store.append_history(db, run["id"], {"epoch": epoch, "val/loss": loss})
                store.end_run(run["id"], "finished", {"val/loss": loss, "epoch": EVALS})


def stats(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"median_ms": round(1000 * statistics.median(times), 2),
            "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 2), "n": len(times)}  # fmt: skip


def measure(backend: Any, sweep_id: str, samples: int, rng: random.Random) -> dict[str, Any]:
    LOCK["held"].clear()
    claims, reports = [], []
    for _ in range(samples):
        start = time.perf_counter()
        run, reason = backend.claim(sweep_id)
        claims.append(time.perf_counter() - start)
        assert run is not None, reason
        loss = rng.uniform(0.5, 2.0)
        for epoch in range(1, EVALS + 1 if len(reports) < samples else 1):
            loss *= rng.uniform(0.8, 1.0)
            start = time.perf_counter()
            stop = backend.report(run["id"], {"epoch": epoch, "val/loss": loss})
            reports.append(time.perf_counter() - start)
            if stop:
                break
        backend.store.end_run(run["id"], "finished", {"val/loss": loss})
    return {"claim": stats(claims), "report": stats(reports),
            "lock_held_max_ms": round(1000 * max(LOCK["held"]), 2)}  # fmt: skip


def _contender(url: str, sweep_id: str, cycles: int, seed: int, out: Any) -> None:
    from ignite_sweep.backends.local import LocalBackend
    from ignite_sweep.store.sql import LocalStore

    instrument_lock()
    LOCK["wait"].clear()
    LOCK["held"].clear()
    backend, rng, claimed = LocalBackend(LocalStore(url)), random.Random(seed), []
    for _ in range(cycles):
        run, _ = backend.claim(sweep_id)
        if run is None:
            break
        claimed.append(run["id"])
        loss = rng.uniform(0.5, 2.0)
        for epoch in range(1, 4):
            loss *= 0.9
            if backend.report(run["id"], {"epoch": epoch, "val/loss": loss}):
                break
        backend.store.end_run(run["id"], "finished", {"val/loss": loss})
    out.put({"wait": max(LOCK["wait"]), "held": max(LOCK["held"]), "claimed": claimed})


def concurrent(url: str, runs: int, procs: int, cycles: int) -> dict[str, Any]:
    from ignite_sweep.backends.local import LocalBackend
    from ignite_sweep.store.sql import LocalStore

    backend = LocalBackend(LocalStore(url))
    sweep_id = backend.create(config_for("random+hyperband"))
    grow(backend, sweep_id, "random+hyperband", 0, runs, random.Random(7))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_contender, args=(url, sweep_id, cycles, seed, out)) for seed in range(procs)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    results = [out.get(timeout=1800) for _ in workers]
    wall = time.perf_counter() - start
    for w in workers:
        w.join()
    claimed = [c for r in results for c in r["claimed"]]
    return {"runs_before": runs, "processes": procs, "claimed": len(claimed),
            "distinct": len(set(claimed)) == len(claimed),
            "lock_wait_max_ms": round(1000 * max(r["wait"] for r in results), 2),
            "lock_held_max_ms": round(1000 * max(r["held"] for r in results), 2),
            "runs_per_s": round(len(claimed) / wall, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store URL (default: a SQLite file in a temp folder)")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--samples", type=int, default=20, help="claims (and runs reported into) per size")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--bayes-max", type=int, default=1000, help="largest size bayes is measured at")
    parser.add_argument("--concurrent-runs", type=int, default=2000)
    parser.add_argument("--concurrent-cycles", type=int, default=10, help="claim + 3 reports, per process")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ignite_sweep.backends.local import LocalBackend
    from ignite_sweep.store.sql import LocalStore

    instrument_lock()
    folder = tempfile.mkdtemp(prefix="store-scale-")
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = {}
    for method in args.methods.split(","):
        url = args.store or f"sqlite:///{folder}/{method}.db"
        backend, rng = LocalBackend(LocalStore(url)), random.Random(1)
        sweep_id = backend.create(config_for(method))
        have = 0
        for size in sizes:
            if method == "bayes" and size > args.bayes_max:
                results[f"{method}@{size}"] = f"not measured (--bayes-max {args.bayes_max})"
                continue
            started = time.perf_counter()
            grow(backend, sweep_id, method, have, size, rng)
            built = time.perf_counter() - started
            have = size
            result = measure(backend, sweep_id, args.samples, rng)
            have += args.samples
            results[f"{method}@{size}"] = result
            print(f"{method:>17} {size:>6} runs: claim {result['claim']['median_ms']:8.2f} ms "
                  f"(p95 {result['claim']['p95_ms']:8.2f})  report {result['report']['median_ms']:8.2f} ms "
                  f"(p95 {result['report']['p95_ms']:8.2f})  lock held max {result['lock_held_max_ms']:8.2f} ms"
                  f"  [built in {built:.1f} s]", flush=True)  # fmt: skip
    if args.concurrent_runs:
        url = args.store or f"sqlite:///{folder}/concurrent.db"
        results["concurrent"] = concurrent(url, args.concurrent_runs, 8, args.concurrent_cycles)
        print(f"8 processes on {args.concurrent_runs} runs: {results['concurrent']}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
