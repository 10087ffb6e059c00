"""Claim latency of the local backend's store: SQLite against PostgreSQL, with 1 and 4 agents claiming at once.

Each agent is a process that claims runs of one grid sweep (the engine's suggestion included) and records them
finished at once, so the figure is the store's and the engine's cost per run, without training. Prints, per
setting, the median and 95th percentile claim time and the runs/s the agents reached together; last line JSON.
Usage: python benchmarks/claims.py [--store URL ...] [--runs 200]  (default: a SQLite file in a temp folder)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _agent(url: str, sweep_id: str, out: Any) -> None:
    from ignite_sweep.backends.local import LocalBackend
    from ignite_sweep.store.sql import LocalStore

    backend = LocalBackend(LocalStore(url))
    times = []
    while True:
        start = time.perf_counter()
        run, _ = backend.claim(sweep_id)
        times.append(time.perf_counter() - start)
        if run is None:
            break
        backend.store.end_run(run["id"], "finished", {"val/accuracy": 0.5})
    out.put(times[:-1])


def measure(url: str, agents: int, runs: int) -> dict[str, float]:
    from ignite_sweep.backends.local import LocalBackend
    from ignite_sweep.store.sql import LocalStore
    from ignite_sweep.sweepfile import validate_sweep

    config = {"method": "grid", "metric": {"name": "val/accuracy", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "lr": {"values": [0.001 * (i + 1) for i in range(runs)]}}}
    sweep_id = LocalBackend(LocalStore(url)).create(validate_sweep(config))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_agent, args=(url, sweep_id, out)) for _ in range(agents)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    times = [t for _ in procs for t in out.get(timeout=600)]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    times.sort()
    return {"claims": len(times), "median_ms": round(1000 * statistics.median(times), 2),
            "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 2), "runs_per_s": round(len(times) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", default=None)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = args.store or [f"sqlite:///{Path(tmp) / 'claims.db'}"]
        result = {}
        for url in stores:
            kind = url.split(":", 1)[0]
            for agents in (1, 4):
                result[f"{kind}_{agents}_agents"] = row = measure(url, agents, args.runs)
                print(f"{kind}, {agents} agents: {row}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
